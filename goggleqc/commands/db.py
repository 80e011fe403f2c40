"""``goggleqc db query``: read-only SQL on a results database, printed as a table."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from goggleqc.cli import app, fail
from goggleqc.errors import GoggleQCError
from goggleqc.report.store import query as run_query

db_app = typer.Typer(help="Query the SQLite results store that `goggleqc inspect` writes (docs/results-db.md).",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("query")
def query(
    database: Path = typer.Argument(..., help="The results database, e.g. OUT_DIR/results.sqlite."),
    sql: str = typer.Argument(..., help="One SQL statement, e.g. \"SELECT verdict, count(*) FROM inspections "
                              "GROUP BY verdict\". The database is opened read-only."),
    csv: bool = typer.Option(False, "--csv", help="Print comma-separated values instead of a table."),
) -> None:
    """Run one read-only SQL statement and print the rows as a table."""
    try:
        columns, rows = run_query(database, sql)
    except GoggleQCError as exc:
        fail(str(exc))
    out = Console(soft_wrap=True)
    if csv:
        import csv as csvmod
        import sys

        writer = csvmod.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    table = Table(*columns, show_lines=False, highlight=False)
    for row in rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    out.print(table)
    out.print(f"{len(rows)} row{'s' if len(rows) != 1 else ''}", style="dim")
