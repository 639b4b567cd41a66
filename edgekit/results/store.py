"""The results store: one SQLite file, append-only, with a schema version; every record is also
appended to a JSON Lines file next to it (`results.db` → `results.jsonl`).

- Ours or nothing: the file carries SQLite's `application_id` and a `schema` table. A file that is
  not SQLite, or SQLite made by something else, or by a newer edgekit, is refused — never
  initialised over, never migrated down.
- Append-only: records are inserted, never updated or deleted (triggers refuse both).
- Transactions: one validation's records land together or not at all (`BEGIN IMMEDIATE`).
- Concurrent writers: WAL journal and a busy timeout, so two validations writing the same store
  at once both land; the JSON Lines append happens inside the write lock, so lines never mix.
- Latency samples live in their own table (zlib-compressed float64), the record's JSON without
  them in `records.record_json`; `records(with_samples=True)` puts them back.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__
from edgekit.errors import InputError
from edgekit.results.record import ResultRecord

APPLICATION_ID = 0x65646B74  # "edkt"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 60_000

# Columns copied out of each record for filtering and sorting; the record itself is the JSON.
COLUMNS = {
    "run_id": "TEXT", "created": "TEXT", "model": "TEXT", "device": "TEXT", "runtime": "TEXT",
    "format": "TEXT", "precision": "TEXT", "batch": "INTEGER", "artifact": "TEXT",
    "artifact_sha256": "TEXT", "top1": "REAL", "top1_drop_points": "REAL", "p50_ms": "REAL",
    "p90_ms": "REAL", "p99_ms": "REAL", "throughput_per_s": "REAL", "valid": "INTEGER",
    "gate_passed": "INTEGER",
}
FILTERS = ("model", "device", "runtime", "precision", "format", "run_id")

_TRIGGER = ("CREATE TRIGGER IF NOT EXISTS {table}_append_only_{op} BEFORE {verb} ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'the results store is append-only'); END")
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS schema (version INTEGER NOT NULL, created TEXT NOT NULL, "
    "edgekit_version TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS records (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    + ", ".join(f"{k} {t}" for k, t in COLUMNS.items()) + ", record_json TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS records_key ON records (model, device, runtime)",
    "CREATE INDEX IF NOT EXISTS records_run ON records (run_id)",
    "CREATE TABLE IF NOT EXISTS samples (record_id INTEGER PRIMARY KEY REFERENCES records(id), "
    "count INTEGER NOT NULL, data BLOB NOT NULL)",
    *(_TRIGGER.format(table=t, op=op[0].lower(), verb=op)
      for t in ("records", "samples", "schema") for op in ("UPDATE", "DELETE")),
]


LAYER_PROFILE = "layer_profile"  # record_type of `edgekit profile` records (per-layer times)


def is_layer_profile(record: ResultRecord) -> bool:
    """A per-layer profile record (edgekit profile), not a validation/benchmark record."""
    return record.get("record_type") == LAYER_PROFILE


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def _pack(samples: Iterable[float]) -> tuple[int, bytes]:
    arr = np.asarray(list(samples), dtype="<f8")
    return len(arr), zlib.compress(arr.tobytes(), 6)


def _unpack(blob: bytes) -> list[float]:
    return np.frombuffer(zlib.decompress(blob), dtype="<f8").tolist()


def _column_values(record: ResultRecord, run_id: str) -> dict[str, Any]:
    lat, acc = record.get("latency") or {}, record.get("accuracy") or {}
    gate = record.get("gate") or {}
    return {
        "run_id": record.get("run_id", run_id), "created": record.get("created"),
        "model": record.get("model"), "device": record.get("device"),
        "runtime": record.get("runtime"), "format": record.get("format"),
        "precision": record.get("precision"), "batch": record.get("batch"),
        "artifact": record.get("artifact"), "artifact_sha256": record.get("artifact_sha256"),
        "top1": acc.get("top1"), "top1_drop_points": acc.get("top1_drop_points"),
        "p50_ms": lat.get("p50_ms"), "p90_ms": lat.get("p90_ms"), "p99_ms": lat.get("p99_ms"),
        "throughput_per_s": lat.get("throughput_per_s"),
        "valid": None if "valid" not in lat else int(bool(lat["valid"])),
        "gate_passed": None if "passed" not in gate else int(bool(gate["passed"])),
    }


class ResultsStore:
    """Open (creating if absent) the store at `path`; refuse a file that is not ours."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self.jsonl_path = self.path.with_suffix(".jsonl")
        if self.path.is_dir():
            raise InputError(f"results store {self.path} is a directory",
                             hint="pass a file name, e.g. results.db")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists:
            with open(self.path, "rb") as fh:
                if fh.read(16) != SQLITE_MAGIC:
                    raise InputError(f"{self.path} is not an edgekit results store (not SQLite)",
                                     hint="choose another file; edgekit never overwrites it")
        elif not create:
            raise InputError(f"results store {self.path} does not exist",
                             hint="validate with --store FILE first")
        cannot = f"cannot open the results store {self.path}"
        hint = "choose a --store in a folder you can write to"
        if not exists:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError as exc:  # a file where a folder should be
                raise InputError(f"{cannot}: {exc.filename} is a file, not a folder",
                                 hint=hint) from None
            except OSError as exc:  # no permission, a read-only file system
                raise InputError(f"{cannot}: {exc.strerror} ({exc.filename})", hint=hint) from None
        try:
            self.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                        isolation_level=None, check_same_thread=False)
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:  # "unable to open database file": a read-only folder
            if getattr(self, "conn", None) is not None:
                self.conn.close()
            raise InputError(f"{cannot} ({exc})", hint=hint) from None
        try:
            self._init_with_retries()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise InputError(f"{self.path} is not a usable edgekit results store ({exc})",
                             hint="choose another file; edgekit never overwrites it") from None
        except BaseException:
            self.conn.close()
            raise

    # ------------------------------------------------------------------ setup
    def _tables(self) -> set[str]:
        rows = self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        return {r[0] for r in rows if not r[0].startswith("sqlite_")}

    def _init_with_retries(self) -> None:
        """`_check_or_init`, retried while another process holds the lock: switching to WAL
        needs the file to itself, and SQLite answers that with "database is locked" at once
        rather than through the busy timeout."""
        import time

        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self._check_or_init()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                if self.conn.in_transaction:
                    self.conn.rollback()
                time.sleep(0.05)

    def _check_or_init(self) -> None:
        # One read transaction, so both come from the same snapshot: read apart, another process
        # initialising the file in between would show tables without the application id.
        self.conn.execute("BEGIN")
        try:
            app_id = self.conn.execute("PRAGMA application_id").fetchone()[0]
            tables = self._tables()
        finally:
            self.conn.execute("COMMIT")
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise InputError(f"{self.path} is an SQLite file but not an edgekit results store",
                             hint="choose another file; edgekit never overwrites it")
        if app_id == APPLICATION_ID:
            self._check_version()
            self._check_integrity()
        # WAL lets readers and one writer work at once; it persists in the file.
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        if app_id == APPLICATION_ID:
            return
        with self._write():
            # Another process may have initialised it while we waited for the lock.
            if self.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID:
                self._check_version()
                return
            if self._tables():
                raise InputError(f"{self.path} is an SQLite file but not an edgekit results store",
                                 hint="choose another file; edgekit never overwrites it")
            for statement in SCHEMA:
                self.conn.execute(statement)
            self.conn.execute("INSERT INTO schema VALUES (?, datetime('now'), ?)",
                              (SCHEMA_VERSION, __version__))
            self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_integrity(self) -> None:
        """A store damaged in the middle (its header intact) is found now, before minutes of
        measuring, not when the records are inserted (SQLite's quick_check reads every page)."""
        rows = self.conn.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            raise InputError(f"{self.path} is damaged ({rows[0][0]})",
                             hint="restore it from a copy, or pass another --store; its "
                             "records are also in " + self.jsonl_path.name)

    def _check_version(self) -> None:
        row = self.conn.execute("SELECT MAX(version) FROM schema").fetchone()
        version = row[0] if row else None
        if version is None:
            raise InputError(f"{self.path} has no schema version", hint="choose another file")
        if version > SCHEMA_VERSION:
            raise InputError(
                f"{self.path} was written with results schema {version}; this edgekit "
                f"({__version__}) reads up to {SCHEMA_VERSION}",
                hint="upgrade edgekit (pip install -U edgekit) to read or add to it")
        self.schema_version = version

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the lock is taken up front so writers queue, not fail."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ writing
    def add(self, records: list[ResultRecord], run_id: str | None = None) -> list[int]:
        """Append `records` (all or none) and return their ids; each also goes to the JSONL."""
        run_id = run_id or new_run_id()
        ids: list[int] = []
        with self._write() as conn:
            lines = []
            for record in records:
                record = {**record, "run_id": record.get("run_id", run_id)}
                lat = dict(record.get("latency") or {})
                samples = lat.pop("samples_ms", None)
                stored = {**record, "latency": lat}
                cols = _column_values(record, run_id)
                cur = conn.execute(
                    f"INSERT INTO records ({', '.join(cols)}, record_json) "
                    f"VALUES ({', '.join('?' * (len(cols) + 1))})",
                    [*cols.values(), json.dumps(stored, default=str)])
                record_id = int(cur.lastrowid)
                ids.append(record_id)
                if samples is not None:
                    conn.execute("INSERT INTO samples VALUES (?, ?, ?)",
                                 (record_id, *_pack(samples)))
                lines.append(json.dumps({"id": record_id, **record}, default=str))
            if lines:
                with open(self.jsonl_path, "a", encoding="utf-8") as fh:
                    fh.write("\n".join(lines) + "\n")
                    fh.flush()
        return ids

    # ------------------------------------------------------------------ reading
    def has_run(self, run_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM records WHERE run_id = ? LIMIT 1",
                                 (run_id,)).fetchone() is not None

    def records(self, *, with_samples: bool = False, **filters: str | None) -> list[ResultRecord]:
        """Records in insertion order, filtered by equality on model/device/runtime/…"""
        unknown = set(filters) - set(FILTERS)
        if unknown:
            raise InputError(f"cannot filter results by {', '.join(sorted(unknown))}",
                             hint=f"filter by: {', '.join(FILTERS)}")
        where = [(k, v) for k, v in filters.items() if v is not None]
        sql = "SELECT id, record_json FROM records"
        if where:
            sql += " WHERE " + " AND ".join(f"{k} = ?" for k, _ in where)
        rows = self.conn.execute(sql + " ORDER BY id", [v for _, v in where]).fetchall()
        out = []
        for record_id, text in rows:
            record = {"id": record_id, **json.loads(text)}
            if with_samples:
                blob = self.conn.execute("SELECT data FROM samples WHERE record_id = ?",
                                         (record_id,)).fetchone()
                if blob is not None:
                    record["latency"]["samples_ms"] = _unpack(blob[0])
            out.append(record)
        return out

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | Path, *, create: bool = True) -> ResultsStore:
    return ResultsStore(path, create=create)


def latest(records: list[ResultRecord]) -> list[ResultRecord]:
    """The newest record per (model, device, runtime, format, precision, batch, artifact path),
    in first-seen order: what the report and the default table show."""
    keyed: dict[tuple, dict[str, Any]] = {}
    for r in records:
        key = (r.get("model"), r.get("device"), r.get("runtime"), r.get("format"),
               r.get("precision"), r.get("batch"), str(r.get("artifact", "")),
               r.get("record_type"))
        keyed[key] = r
    return list(keyed.values())
