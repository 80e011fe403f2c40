"""One inspected image as a record: the JSON schema of station-model.md §3 plus where it came from.

A record is ``Result.to_dict()`` with three batch fields added:

``path``
    The image file as the batch found it (the key: two files named ``lens_0001.png`` in two
    folders are two records).
``content_hash``
    ``blake2b:<hex>`` of the file's bytes, so ``--resume`` can tell a finished image from one
    that was replaced since; None when the file could not be read.
``overlay``
    The overlay PNG relative to the output folder, or None.

Records are what every sink writes (JSONL, CSV, SQLite) and what the HTML report reads back.
"""

from __future__ import annotations

import math
from typing import Any

from goggleqc.inspect.results import CoatingDefect, Mark, Reason, Result, Scratch, Spot

#: the batch fields added to ``Result.to_dict()``
BATCH_FIELDS = ("path", "content_hash", "overlay")

#: defect list in a record -> the kind name used in reports and the SQLite ``defects`` table
DEFECT_LISTS = {"scratches": "scratch", "spots": "spot", "coating": "coating"}


def make_record(result: Result, *, path: str, content_hash: str | None, overlay: str | None = None) -> dict[str, Any]:
    """The record of one image: ``result`` in the JSON schema plus the batch fields."""
    record = result.to_dict()
    record["path"] = path
    record["content_hash"] = content_hash
    record["overlay"] = overlay
    return record


def error_record(path: str, message: str, *, content_hash: str | None = None,
                 timing_ms: dict[str, float] | None = None) -> dict[str, Any]:
    """The record of an image that could not be inspected: verdict ``error`` with ``message``."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    result = Result(image=name, verdict="error", reasons=[Reason("error", None, None, "", None, message)],
                    lens_found=False, error=message, timing_ms=dict(timing_ms or {}))
    return make_record(result, path=path, content_hash=content_hash)


def result_from_record(record: dict[str, Any]) -> Result:
    """Rebuild a :class:`Result` from a record (or a simulator truth record); extra keys are ignored."""
    def build(cls, items):
        names = cls.__dataclass_fields__
        return [cls(**{k: v for k, v in item.items() if k in names}) for item in items or []]

    fields = Result.__dataclass_fields__
    kwargs = {k: v for k, v in record.items() if k in fields}
    kwargs["reasons"] = build(Reason, record.get("reasons"))
    kwargs["scratches"] = build(Scratch, record.get("scratches"))
    kwargs["spots"] = build(Spot, record.get("spots"))
    kwargs["coating"] = build(CoatingDefect, record.get("coating"))
    kwargs["marks"] = build(Mark, record.get("marks"))
    return Result(**kwargs)


def defect_kind(list_name: str, defect: dict[str, Any]) -> str:
    """``scratch``, ``spot:<kind>`` or ``coating:<kind>``: the finest kind a record names."""
    base = DEFECT_LISTS[list_name]
    sub = defect.get("kind")
    return f"{base}:{sub}" if sub and sub != base else base


def worst(record: dict[str, Any], list_name: str, field: str) -> float | None:
    """The largest ``field`` over one defect list of a record, or None when nothing has it."""
    values = [d.get(field) for d in record.get(list_name) or []]
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return max(values) if values else None


def total_ms(record: dict[str, Any]) -> float | None:
    """Wall time spent on this image in the batch (read, decode, analyse), in ms."""
    timing = record.get("timing_ms") or {}
    value = timing.get("batch_total") if "batch_total" in timing else timing.get("total")
    return float(value) if value is not None else None
