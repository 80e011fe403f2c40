"""``goggleqc explain``: why a lens passed or failed — each measured value against its limit, and the margin.

RESULT_OR_IMAGE is a result record (``.json``), a results file (``.jsonl``: every record, or
the one named by ``--image``), or a lens image, which is inspected first with ``--station``
and ``--spec`` (and the station's learned model, if it has one).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from goggleqc.cli import app, console, fail
from goggleqc.errors import GoggleQCError, InputError


def _records(path: Path, image: str | None) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    records = []
    lines = [text] if path.suffix == ".json" else text.splitlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            where = f"line {i}" if path.suffix != ".json" else "the file"
            raise InputError(f"{path}: {where} is not a JSON result record ({exc})") from None
        if not isinstance(rec, dict) or "verdict" not in rec:
            raise InputError(f"{path}: holds something other than goggleqc result records (no 'verdict')")
        records.append(rec)
    if image is not None:
        records = [r for r in records if r.get("image") == image or Path(str(r.get("path", ""))).name == image]
        if not records:
            raise InputError(f"{path}: no record for image {image!r}")
    if not records:
        raise InputError(f"{path}: holds no result records")
    return records


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    unit = "%" if unit == "%" else f" {unit}" if unit else ""
    return f"{value:.3g}{unit}"


@app.command()
def explain(
    target: Path = typer.Argument(..., metavar="RESULT_OR_IMAGE", help="A result .json/.jsonl, or a lens image."),
    station_dir: Path = typer.Option(None, "--station", help="Station folder (to inspect an image).", metavar="DIR"),
    spec_name: str = typer.Option(None, "--spec", help="Spec TOML file or preset (default: the shipped default).",
                                  metavar="FILE|PRESET"),
    image: str = typer.Option(None, "--image", help="With a .jsonl: explain only this image's record.", metavar="NAME"),
) -> None:
    """Print why a lens passed or failed: each measured value against its limit, the margin, and what decided."""
    from goggleqc.classify.explain import explain_record
    from goggleqc.spec import DEFAULT_SPEC, load_spec

    try:
        spec = load_spec(spec_name or DEFAULT_SPEC)
        if not target.exists():
            raise InputError(f"{target}: no such file")
        if target.suffix.lower() in (".json", ".jsonl"):
            records = _records(target, image)
        else:
            from goggleqc.capture.imagefile import read_image
            from goggleqc.inspect.pipeline import inspect_lens

            station = None
            if station_dir is not None:
                from goggleqc.calibration.station import Station
                from goggleqc.classify.model import attach_model

                station = Station.load(station_dir)
                attach_model(station)
            records = [inspect_lens(read_image(target), station, spec, name=target.name).to_dict()]
    except GoggleQCError as exc:
        fail(str(exc))

    for rec in records:
        ex = explain_record(rec, spec)
        colour = {"pass": "green", "fail": "red"}.get(ex.verdict, "yellow")
        console.print(f"[bold]{ex.image}[/]: [{colour}]{ex.verdict}[/]  (spec {spec.name})", highlight=False)
        if ex.error:
            console.print(f"  could not be inspected: {ex.error}", highlight=False, soft_wrap=True)
            continue
        table = Table(show_edge=False)
        for col in ("limit", "zone", "measured", "limit value", "margin", "status"):
            table.add_column(col)
        for r in ex.rows:
            op = "≤" if r.bound == "max" else "≥"
            style = {"fail": "red", "pass": "green"}.get(r.status, "dim")
            table.add_row(f"{r.code} {r.field}", r.zone or "any", _fmt(r.value, r.unit), f"{op} {_fmt(r.limit, r.unit)}",
                          _fmt(r.margin, r.unit), f"[{style}]{r.status}[/]")
        console.print(table)
        if ex.model_p_fail is not None:
            console.print(f"  learned model: P(fail) = {ex.model_p_fail:.2f}", highlight=False)
        for d in ex.decided_by:
            console.print(f"  decided by {d}", highlight=False, soft_wrap=True)
