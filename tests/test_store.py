"""The SQLite results store: schema, WAL, one commit per inspection, queries, bad database files."""

from __future__ import annotations

import json
import sqlite3

import pytest

from goggleqc.batch import iter_image_paths, run_batch
from goggleqc.errors import InputError
from goggleqc.report.store import SCHEMA_VERSION, ResultStore, query
from test_batch import TruthInspector, load_truth, truth_set


def _count_defects(truth: dict) -> dict[str, int]:
    out = {"scratch": 0, "spot": 0, "coating": 0}
    for rec in truth.values():
        out["scratch"] += len(rec["scratches"])
        out["spot"] += len(rec["spots"])
        out["coating"] += len(rec["coating"])
    return out


def test_store_holds_every_inspection_reason_and_defect(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)
    db = tmp_path / "results.sqlite"
    store = ResultStore(db)
    run_id = store.start_run(command="goggleqc inspect test", spec_name="en166-clear", spec={"haze": {"max_pct": 3.0}},
                             workers=2)
    seen_by_reader = []
    reader = sqlite3.connect(db)

    def on_record(record, summary):
        # committed per inspection: a second connection sees each row as soon as it is written
        seen_by_reader.append(reader.execute("SELECT count(*) FROM inspections").fetchone()[0])

    summary = run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth), [store], workers=2,
                        on_record=on_record)
    store.finish_run(status="finished", n_images=summary.n_done, n_pass=summary.n_pass, n_fail=summary.n_fail,
                     n_error=summary.n_error, wall_s=summary.wall_s)
    store.close()
    reader.close()
    assert seen_by_reader == list(range(1, len(truth) + 1))

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    run = con.execute("SELECT status, n_images, n_pass, n_fail, workers, spec_name, spec_json FROM runs "
                      "WHERE run_id=?", (run_id,)).fetchone()
    assert run[:6] == ("finished", len(truth), summary.n_pass, summary.n_fail, 2, "en166-clear")
    assert json.loads(run[6]) == {"haze": {"max_pct": 3.0}}
    rows = con.execute("SELECT image, verdict, reason_codes, haze_pct, record_json FROM inspections").fetchall()
    assert len(rows) == len(truth)
    for image, verdict, codes, haze, record_json in rows:
        t = truth[image]
        assert verdict == t["verdict"]
        assert codes == ";".join(dict.fromkeys(r["code"] for r in t["reasons"]))
        assert haze == pytest.approx(t["haze_pct"])
        assert json.loads(record_json)["verdict"] == verdict
    kinds = dict(con.execute("SELECT kind, count(*) FROM defects GROUP BY kind").fetchall())
    expected = {k: v for k, v in _count_defects(truth).items() if v}
    assert kinds == expected
    n_reasons = sum(len(t["reasons"]) for t in truth.values())
    assert con.execute("SELECT count(*) FROM reasons").fetchone()[0] == n_reasons
    # the largest central scratch per failing lens, in mm, straight from SQL
    worst = con.execute("SELECT i.image, max(d.length_mm) FROM defects d JOIN inspections i USING (inspection_id) "
                        "WHERE d.kind='scratch' GROUP BY i.image").fetchall()
    for image, length in worst:
        assert length == pytest.approx(max(s["length_mm"] for s in truth[image]["scratches"]))
    con.close()


def test_query_read_only_and_errors(tmp_path):
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    store.start_run()
    store.write({"path": "/x/a.png", "image": "a.png", "verdict": "pass", "reasons": []})
    store.close()
    cols, rows = query(db, "SELECT path, verdict FROM inspections")
    assert cols == ["path", "verdict"] and rows == [("/x/a.png", "pass")]
    with pytest.raises(InputError, match="SQL error: .*readonly"):
        query(db, "DELETE FROM inspections")
    with pytest.raises(InputError, match="SQL error: no such table: nope"):
        query(db, "SELECT * FROM nope")
    with pytest.raises(InputError, match="no such results database"):
        query(tmp_path / "missing.sqlite", "SELECT 1")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match="not a goggleqc results database"):
        ResultStore(junk)


def test_store_refuses_other_schema_versions(tmp_path):
    db = tmp_path / "future.sqlite"
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version=99")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="schema version 99 is not 1; use a new --db file"):
        ResultStore(db)


def test_db_query_command(cli, tmp_path):
    db = tmp_path / "r.sqlite"
    store = ResultStore(db)
    store.start_run()
    for i, verdict in enumerate(["pass", "fail", "fail"]):
        store.write({"path": f"/x/{i}.png", "image": f"{i}.png", "verdict": verdict, "reasons": []})
    store.close()
    result = cli("db", "query", db, "SELECT verdict, count(*) AS n FROM inspections GROUP BY verdict ORDER BY verdict")
    assert result.exit_code == 0, result.output
    assert "verdict" in result.output and "fail" in result.output and "2" in result.output and "2 rows" in result.output
    result = cli("db", "query", db, "SELECT verdict FROM inspections ORDER BY path", "--csv")
    assert result.output.splitlines() == ["verdict", "pass", "fail", "fail"]
    result = cli("db", "query", db, "SELEC nonsense")
    assert result.exit_code == 2 and "SQL error" in result.output
