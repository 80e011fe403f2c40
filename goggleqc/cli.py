"""The ``goggleqc`` command line: thin Typer wrappers over the library.

Each command lives in its own module under :mod:`goggleqc.commands` and registers itself on
``app``. Errors caused by the input print one clear line and exit with status 2; they never
show a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from goggleqc.errors import GoggleQCError

app = typer.Typer(
    name="goggleqc",
    help="Optical quality inspection of goggle lenses: haze, transmittance, scratches, spots and coating defects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

#: exit status for a usage or input error (Typer/Click use 2 for usage errors too)
EXIT_USAGE = 2


@app.callback()
def _root() -> None:
    """Optical quality inspection of goggle lenses: haze, transmittance, scratches, spots and coating defects."""


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print ``error: message`` and exit with ``code``."""
    # escaped: a message naming `goggleqc[dask]` or a file like `lens[1].png` is not rich markup
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def main() -> None:
    from goggleqc import commands  # noqa: F401  (registers every command on app)

    try:
        app()
    except GoggleQCError as exc:  # a command that did not catch its own input error
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
