"""Result sinks and presentation: JSONL/CSV writers, the SQLite store, HTML reports, overlays."""
