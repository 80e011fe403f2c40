"""The SQLite results store: stdlib ``sqlite3`` in WAL mode, one commit per inspection.

It is the embedded default store; a shared plant database can later sit behind the same
three methods (:meth:`ResultStore.start_run`, :meth:`ResultStore.write`,
:meth:`ResultStore.finish_run`). Every inspection is committed as it completes, so a crash
or power cut loses nothing already committed, and readers (``sqlite3``,
``goggleqc db query``) can watch a running batch.

Schema (version 1, kept in ``PRAGMA user_version``; docs/results-db.md has examples)::

    runs         one row per `goggleqc inspect` invocation
      run_id INTEGER PRIMARY KEY, started_utc TEXT, finished_utc TEXT,
      status TEXT            -- running | finished | interrupted | failed
      command TEXT, out_dir TEXT, spec_name TEXT, spec_json TEXT, station TEXT,
      pixel_size_mm REAL, workers INTEGER, goggleqc_version TEXT,
      n_images INTEGER, n_pass INTEGER, n_fail INTEGER, n_error INTEGER, n_skipped INTEGER,
      wall_s REAL, images_per_s REAL

    inspections  one row per inspected image (a resumed image keeps its first row)
      inspection_id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs,
      path TEXT, image TEXT, content_hash TEXT,
      verdict TEXT           -- pass | fail | error
      reason_codes TEXT      -- e.g. "haze;scratch"
      haze_pct REAL, haze_kind TEXT, transmittance_pct REAL, pixel_size_mm REAL,
      lens_found INTEGER, error TEXT, overlay TEXT, time_ms REAL, inspected_utc TEXT,
      record_json TEXT       -- the full JSONL record

    reasons      one row per broken limit of an inspection
      inspection_id INTEGER REFERENCES inspections, code TEXT, value REAL, limit_value REAL,
      unit TEXT, zone TEXT, message TEXT

    defects      one row per scratch, spot or coating defect found
      inspection_id INTEGER REFERENCES inspections,
      kind TEXT              -- scratch | spot | coating
      subkind TEXT           -- spot kind (inclusion, dig, ...) or coating kind (run, void, mottle)
      zone TEXT, contrast REAL,
      length_mm REAL, width_mm REAL, diameter_mm REAL, area_mm2 REAL,
      length_px REAL, width_px REAL, diameter_px REAL, area_px REAL,
      x0 INTEGER, y0 INTEGER, x1 INTEGER, y1 INTEGER   -- bbox_px, exclusive ends
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from goggleqc.errors import InputError
from goggleqc.report.records import DEFECT_LISTS, total_ms
from goggleqc.report.writers import jsonable

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    started_utc TEXT NOT NULL,
    finished_utc TEXT,
    status TEXT NOT NULL,
    command TEXT,
    out_dir TEXT,
    spec_name TEXT,
    spec_json TEXT,
    station TEXT,
    pixel_size_mm REAL,
    workers INTEGER,
    goggleqc_version TEXT,
    n_images INTEGER DEFAULT 0,
    n_pass INTEGER DEFAULT 0,
    n_fail INTEGER DEFAULT 0,
    n_error INTEGER DEFAULT 0,
    n_skipped INTEGER DEFAULT 0,
    wall_s REAL,
    images_per_s REAL
);
CREATE TABLE IF NOT EXISTS inspections (
    inspection_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    path TEXT NOT NULL,
    image TEXT,
    content_hash TEXT,
    verdict TEXT NOT NULL,
    reason_codes TEXT,
    haze_pct REAL,
    haze_kind TEXT,
    transmittance_pct REAL,
    pixel_size_mm REAL,
    lens_found INTEGER,
    error TEXT,
    overlay TEXT,
    time_ms REAL,
    inspected_utc TEXT NOT NULL,
    record_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reasons (
    inspection_id INTEGER NOT NULL REFERENCES inspections(inspection_id),
    code TEXT NOT NULL,
    value REAL,
    limit_value REAL,
    unit TEXT,
    zone TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS defects (
    inspection_id INTEGER NOT NULL REFERENCES inspections(inspection_id),
    kind TEXT NOT NULL,
    subkind TEXT,
    zone TEXT,
    contrast REAL,
    length_mm REAL, width_mm REAL, diameter_mm REAL, area_mm2 REAL,
    length_px REAL, width_px REAL, diameter_px REAL, area_px REAL,
    x0 INTEGER, y0 INTEGER, x1 INTEGER, y1 INTEGER
);
CREATE INDEX IF NOT EXISTS inspections_path ON inspections(path);
CREATE INDEX IF NOT EXISTS inspections_verdict ON inspections(run_id, verdict);
CREATE INDEX IF NOT EXISTS reasons_inspection ON reasons(inspection_id);
CREATE INDEX IF NOT EXISTS defects_inspection ON defects(inspection_id);
CREATE INDEX IF NOT EXISTS defects_kind ON defects(kind, subkind);
"""

_SIZE_FIELDS = ("length_mm", "width_mm", "diameter_mm", "area_mm2", "length_px", "width_px", "diameter_px", "area_px")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a results database, refusing a file that is not one with a clear :class:`InputError`."""
    path = Path(path)
    if readonly and not path.exists():
        raise InputError(f"{path}: no such results database")
    try:
        if readonly:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        else:
            con = sqlite3.connect(path)
        con.execute("PRAGMA schema_version").fetchone()  # fails here if the file is not SQLite
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: not a goggleqc results database ({exc})") from None
    return con


class ResultStore:
    """Write runs and inspections to an SQLite file (created with :data:`SCHEMA` if new).

    Parameters
    ----------
    path : str or Path
        The database file, e.g. ``OUT_DIR/results.sqlite``.

    Notes
    -----
    One connection, used from one thread: the batch runner writes every record from its
    main thread. ``synchronous=NORMAL`` with WAL keeps each commit durable against an
    application crash and costs about a millisecond per inspection.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.con = connect(self.path)
        try:
            version = self.con.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise InputError(f"{self.path}: results database schema version {version} is not "
                                 f"{SCHEMA_VERSION}; use a new --db file")
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=NORMAL")
            self.con.execute("PRAGMA foreign_keys=ON")
            self.con.executescript(SCHEMA)
            self.con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.con.commit()
        except sqlite3.DatabaseError as exc:
            self.con.close()
            raise InputError(f"{self.path}: cannot use this results database ({exc})") from None
        self.run_id: int | None = None

    def start_run(self, *, command: str = "", out_dir: str = "", spec_name: str = "", spec: dict | None = None,
                  station: str | None = None, pixel_size_mm: float | None = None, workers: int | None = None,
                  version: str = "") -> int:
        """Insert a ``running`` run row and return its id; later writes belong to it."""
        cur = self.con.execute(
            "INSERT INTO runs (started_utc, status, command, out_dir, spec_name, spec_json, station, pixel_size_mm,"
            " workers, goggleqc_version) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
            (_now(), command, out_dir, spec_name, json.dumps(spec or {}, default=jsonable), station, pixel_size_mm,
             workers, version))
        self.con.commit()
        self.run_id = int(cur.lastrowid)
        return self.run_id

    def write(self, record: dict[str, Any]) -> int:
        """Insert one inspection with its reasons and defects, and commit; returns its id."""
        if self.run_id is None:
            self.start_run()
        reasons = record.get("reasons") or []
        with self.con:  # one transaction, committed on exit
            cur = self.con.execute(
                "INSERT INTO inspections (run_id, path, image, content_hash, verdict, reason_codes, haze_pct, haze_kind,"
                " transmittance_pct, pixel_size_mm, lens_found, error, overlay, time_ms, inspected_utc, record_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.run_id, record["path"], record.get("image"), record.get("content_hash"), record["verdict"],
                 ";".join(dict.fromkeys(r["code"] for r in reasons)), record.get("haze_pct"), record.get("haze_kind"),
                 record.get("transmittance_pct"), record.get("pixel_size_mm"),
                 None if record.get("lens_found") is None else int(bool(record["lens_found"])),
                 record.get("error"), record.get("overlay"), total_ms(record), _now(),
                 json.dumps(record, ensure_ascii=False, default=jsonable)))
            inspection_id = int(cur.lastrowid)
            self.con.executemany(
                "INSERT INTO reasons (inspection_id, code, value, limit_value, unit, zone, message)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(inspection_id, r["code"], r.get("value"), r.get("limit"), r.get("unit"), r.get("zone"),
                  r.get("message")) for r in reasons])
            rows = []
            for list_name, kind in DEFECT_LISTS.items():
                for d in record.get(list_name) or []:
                    sub = d.get("kind") if list_name != "scratches" else d.get("polarity")
                    bbox = list(d.get("bbox_px") or [None] * 4)[:4]
                    rows.append((inspection_id, kind, sub, d.get("zone"), d.get("contrast"),
                                 *(d.get(f) for f in _SIZE_FIELDS), *bbox))
            self.con.executemany(
                "INSERT INTO defects (inspection_id, kind, subkind, zone, contrast, length_mm, width_mm, diameter_mm,"
                " area_mm2, length_px, width_px, diameter_px, area_px, x0, y0, x1, y1)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return inspection_id

    def finish_run(self, *, status: str, n_images: int, n_pass: int, n_fail: int, n_error: int,
                   n_skipped: int = 0, wall_s: float | None = None) -> None:
        """Close the current run row with its counts, wall time and throughput."""
        if self.run_id is None:
            return
        rate = n_images / wall_s if wall_s else None
        with self.con:
            self.con.execute(
                "UPDATE runs SET finished_utc=?, status=?, n_images=?, n_pass=?, n_fail=?, n_error=?, n_skipped=?,"
                " wall_s=?, images_per_s=? WHERE run_id=?",
                (_now(), status, n_images, n_pass, n_fail, n_error, n_skipped, wall_s, rate, self.run_id))

    def close(self) -> None:
        self.con.close()


def query(path: str | Path, sql: str, params: tuple = ()) -> tuple[list[str], list[tuple]]:
    """Run one read-only SQL statement on a results database: ``(column names, rows)``."""
    con = connect(path, readonly=True)
    try:
        cur = con.execute(sql, params)
        columns = [d[0] for d in cur.description or []]
        return columns, cur.fetchall()
    except sqlite3.Error as exc:
        raise InputError(f"SQL error: {exc}") from None
    finally:
        con.close()
