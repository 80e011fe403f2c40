"""Streaming file sinks: ``results.jsonl`` (one record per line) and ``results.csv`` (one row per image).

Both write each record as it arrives and flush it, so an interrupted batch keeps every
record written so far. ``results.jsonl`` is also the resume state: :func:`resume_state`
reads back which images are done, by path and content hash.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from goggleqc.errors import InputError
from goggleqc.report.records import total_ms, worst

#: the flat CSV columns, one row per image; mm columns are empty for uncalibrated images
CSV_COLUMNS = (
    "path", "image", "verdict", "reason_codes", "reasons", "haze_pct", "haze_kind", "transmittance_pct",
    "n_scratches", "max_scratch_length_mm", "max_scratch_length_px",
    "n_spots", "max_spot_diameter_mm", "max_spot_diameter_px",
    "n_coating", "max_coating_area_mm2", "max_coating_area_px", "n_marks",
    "pixel_size_mm", "lens_found", "error", "time_ms", "content_hash", "overlay",
)


def jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and arrays inside records."""
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class JsonlWriter:
    """Append records to ``results.jsonl``, one JSON object per line, flushed per record."""

    def __init__(self, path: str | Path, *, append: bool = False):
        self.path = Path(path)
        self._fh = open(self.path, "a" if append else "w", encoding="utf-8", newline="\n")

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, default=jsonable) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def csv_row(record: dict[str, Any]) -> dict[str, Any]:
    """Flatten one record into the :data:`CSV_COLUMNS` (worst defect of each kind, counts)."""
    reasons = record.get("reasons") or []
    return {
        "path": record.get("path"),
        "image": record.get("image"),
        "verdict": record.get("verdict"),
        "reason_codes": ";".join(dict.fromkeys(r["code"] for r in reasons)),
        "reasons": "; ".join(r["message"] for r in reasons),
        "haze_pct": record.get("haze_pct"),
        "haze_kind": record.get("haze_kind"),
        "transmittance_pct": record.get("transmittance_pct"),
        "n_scratches": len(record.get("scratches") or []),
        "max_scratch_length_mm": worst(record, "scratches", "length_mm"),
        "max_scratch_length_px": worst(record, "scratches", "length_px"),
        "n_spots": len(record.get("spots") or []),
        "max_spot_diameter_mm": worst(record, "spots", "diameter_mm"),
        "max_spot_diameter_px": worst(record, "spots", "diameter_px"),
        "n_coating": len(record.get("coating") or []),
        "max_coating_area_mm2": worst(record, "coating", "area_mm2"),
        "max_coating_area_px": worst(record, "coating", "area_px"),
        "n_marks": len(record.get("marks") or []),
        "pixel_size_mm": record.get("pixel_size_mm"),
        "lens_found": record.get("lens_found"),
        "error": record.get("error"),
        "time_ms": total_ms(record),
        "content_hash": record.get("content_hash"),
        "overlay": record.get("overlay"),
    }


class CsvWriter:
    """Append flat rows to ``results.csv`` (header written once, when the file is new or empty)."""

    def __init__(self, path: str | Path, *, append: bool = False):
        self.path = Path(path)
        fresh = not append or not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "w" if fresh else "a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=CSV_COLUMNS)
        if fresh:
            self._writer.writeheader()
            self._fh.flush()

    def write(self, record: dict[str, Any]) -> None:
        row = {k: ("" if v is None else v) for k, v in csv_row(record).items()}
        self._writer.writerow(row)
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_records(path: str | Path, *, repair: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the records of a ``results.jsonl`` one at a time (constant memory).

    A last line without its newline is the trace of a run killed mid-write: it is skipped,
    and with ``repair=True`` cut off the file so appending continues cleanly. Any other line
    that is not a JSON record raises :class:`InputError` naming the file and line.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the results ({exc.strerror or exc})") from None
    torn_at = None
    with fh:
        offset = 0
        for number, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            if not raw.endswith(b"\n"):
                torn_at = start
                break
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise InputError(f"{path}: line {number} is not a JSON record; the resume state is corrupt. "
                                 "Move the output folder aside and start a new run, or fix that line") from None
            if not isinstance(record, dict) or "path" not in record or "verdict" not in record:
                raise InputError(f"{path}: line {number} is not a goggleqc result record (no path or verdict); "
                                 "the resume state is corrupt. Start a new run in an empty output folder") from None
            yield record
    if torn_at is not None and repair:
        with open(path, "r+b") as fh:
            fh.truncate(torn_at)
            fh.flush()
            os.fsync(fh.fileno())


def resume_state(path: str | Path) -> dict[str, str]:
    """``{path: content_hash}`` of the images a ``results.jsonl`` already holds a verdict for.

    Images whose file could not be read (no content hash) are left out, so a resumed run
    tries them again. A torn last line is cut off (see :func:`read_records`).
    """
    path = Path(path)
    if not path.exists():
        return {}
    done: dict[str, str] = {}
    for record in read_records(path, repair=True):
        if record.get("content_hash"):
            done[record["path"]] = record["content_hash"]
        else:
            done.pop(record["path"], None)
    return done
