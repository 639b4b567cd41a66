"""The results store: round trip with samples, append-only, refusing files that are not ours or
are newer, never overwriting them, and two processes writing at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edgekit.errors import InputError
from edgekit.results.store import APPLICATION_ID, SCHEMA_VERSION, ResultsStore, latest, open_store


def _record(model="m", runtime="onnxruntime", batch=1, p50=1.0, samples=(1.0, 1.5, 2.0)):
    return {"model": model, "device": "local-cpu", "runtime": runtime, "format": "onnx",
            "precision": "fp32", "batch": batch, "artifact": f"/x/{model}.onnx",
            "latency": {"p50_ms": p50, "valid": True, "samples_ms": list(samples)},
            "accuracy": {"top1": 0.9, "top1_drop_points": 0.1},
            "gate": {"passed": True, "reasons": []}}


def test_round_trip_with_samples_and_jsonl(tmp_path):
    path = tmp_path / "results.db"
    with open_store(path) as store:
        ids = store.add([_record(), _record(runtime="openvino", samples=[0.5] * 1000)],
                        run_id="run1")
        assert ids == [1, 2]
    with open_store(path, create=False) as store:
        rows = store.records(with_samples=True)
        assert [r["runtime"] for r in rows] == ["onnxruntime", "openvino"]
        assert rows[1]["latency"]["samples_ms"] == [0.5] * 1000
        assert rows[0]["run_id"] == "run1" and store.has_run("run1")
        assert "samples_ms" not in store.records()[0]["latency"]
        assert [r["runtime"] for r in store.records(runtime="openvino")] == ["openvino"]
        with pytest.raises(InputError, match="filter"):
            store.records(colour="red")
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["runtime"] for line in lines] == ["onnxruntime", "openvino"]
    assert json.loads(lines[1])["latency"]["samples_ms"] == [0.5] * 1000


def test_store_is_append_only(tmp_path):
    with open_store(tmp_path / "r.db") as store:
        store.add([_record()])
        for sql in ("UPDATE records SET model = 'x'", "DELETE FROM records",
                    "DELETE FROM samples", "UPDATE schema SET version = 99"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                store.conn.execute(sql)
        assert store.count() == 1


def test_refuses_a_file_that_is_not_sqlite_and_leaves_it_alone(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("my precious notes\n" * 10)
    before = path.read_bytes()
    with pytest.raises(InputError, match="not an edgekit results store"):
        ResultsStore(path)
    assert path.read_bytes() == before


def test_refuses_someone_elses_sqlite_and_leaves_it_alone(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (name TEXT)")
    conn.execute("INSERT INTO customers VALUES ('ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(InputError, match="not an edgekit results store"):
        ResultsStore(path)
    assert path.read_bytes() == before


def test_refuses_a_store_from_a_newer_schema(tmp_path):
    path = tmp_path / "future.db"
    with open_store(path) as store:
        store.add([_record()])
    conn = sqlite3.connect(path)  # what a future edgekit would have written
    conn.execute(f"INSERT INTO schema VALUES ({SCHEMA_VERSION + 1}, datetime('now'), '9.0')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(InputError, match=f"schema {SCHEMA_VERSION + 1}") as exc:
        ResultsStore(path)
    assert "upgrade edgekit" in exc.value.hint
    assert path.read_bytes() == before


def test_empty_file_becomes_a_store_and_reopens(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with open_store(path) as store:
        store.add([_record()])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    with pytest.raises(InputError, match="does not exist"):
        open_store(tmp_path / "missing.db", create=False)


WRITER = textwrap.dedent("""
    import sys, time
    from edgekit.results.store import open_store
    path, name, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    while time.time() < start:
        time.sleep(0.001)
    for i in range(n):
        with open_store(path) as store:
            store.add([{"model": name, "device": "d", "runtime": "r", "batch": i,
                        "latency": {"p50_ms": 1.0, "samples_ms": [1.0] * 2000}}])
""")


def test_two_processes_writing_at_once_both_land(tmp_path):
    import time

    path = tmp_path / "shared.db"  # neither process finds it: both race to create it, too
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "15", str(start)],
                              stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with open_store(path) as store:
        rows = store.records()
        assert sorted((r["model"], r["batch"]) for r in rows) == sorted(
            (m, i) for m in "ab" for i in range(15))
        assert len({r["id"] for r in rows}) == 30
    lines = Path(tmp_path / "shared.jsonl").read_text().splitlines()
    assert len(lines) == 30 and all(len(json.loads(line)["latency"]["samples_ms"]) == 2000
                                    for line in lines)


def test_latest_keeps_the_newest_per_key_in_first_seen_order():
    old, other, new = _record(p50=3.0), _record(model="n"), _record(p50=1.0)
    assert latest([old, other, new]) == [new, other]
