"""One SQLite database per study: runs, metrics, per-example scores, training logs, analysis.

Every unit of work writes its rows inside one transaction that first deletes what that unit wrote
before, so a unit redone after a crash replaces its rows instead of duplicating them, and a unit
killed midway leaves nothing behind. Each unit's row in `units` carries the content key of its
inputs: a unit is done only for the key it was done with.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    technique TEXT NOT NULL,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    learning_rate REAL NOT NULL,
    sweep INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS units (
    run_id TEXT NOT NULL,          -- a run, 'base', or 'study'
    stage TEXT NOT NULL,           -- train | validate | evaluate:<lang> | harness:<task> | ...
    status TEXT NOT NULL,          -- done | failed
    key TEXT,                      -- content key of the unit's inputs (study/keys.py)
    error TEXT,
    seconds REAL,
    finished_at TEXT DEFAULT (datetime('now')),
    tokens INTEGER,                -- tokens the unit's forwards needed (no padding)
    flops REAL,                    -- matmul FLOPs those tokens needed (models/flops.py)
    PRIMARY KEY (run_id, stage)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    split TEXT NOT NULL,           -- test | validation
    language TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    n INTEGER NOT NULL,
    PRIMARY KEY (run_id, split, language, metric)
);
CREATE TABLE IF NOT EXISTS examples (
    run_id TEXT NOT NULL,
    split TEXT NOT NULL,
    language TEXT NOT NULL,
    metric TEXT NOT NULL,
    example_id TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, split, language, metric, example_id)
);
CREATE TABLE IF NOT EXISTS training (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    loss REAL,
    lr REAL,
    grad_norm REAL,
    tokens INTEGER,
    seconds REAL,
    validation_nll REAL,           -- at the steps training.validate_every names, else NULL
    PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS costs (
    run_id TEXT PRIMARY KEY,
    rank INTEGER,
    trainable_params INTEGER,
    trainable_fraction REAL,
    seconds_per_step REAL,         -- mean over the steps after the first (warm-up) step
    tokens_per_second REAL,        -- likewise
    peak_rss_mb REAL,              -- the run's own peaks (train/memory.py); NULL when unknown
    adapter_bytes INTEGER,
    wall_seconds REAL,
    peak_gpu_mb REAL,              -- NULL on CPU
    first_step_seconds REAL
);
CREATE TABLE IF NOT EXISTS generations (
    run_id TEXT NOT NULL,
    language TEXT NOT NULL,
    example_id TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (run_id, language, example_id)
);
CREATE TABLE IF NOT EXISTS analysis (
    run_id TEXT NOT NULL,          -- a run, 'base', or 'a|b' for a pair of runs
    pooling TEXT NOT NULL,
    layer INTEGER NOT NULL,
    measure TEXT NOT NULL,
    language TEXT NOT NULL,        -- '' when the measure is not per language
    other TEXT NOT NULL,           -- second language or run, '' when none
    value REAL,
    PRIMARY KEY (run_id, pooling, layer, measure, language, other)
);
CREATE TABLE IF NOT EXISTS significance (
    family TEXT NOT NULL,
    metric TEXT NOT NULL,
    technique TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (family, metric, technique)
);
CREATE TABLE IF NOT EXISTS verdicts (
    family TEXT NOT NULL,          -- transfer_seen | transfer_unseen | retention | tradeoff
    metric TEXT NOT NULL,
    technique TEXT NOT NULL,
    verdict TEXT NOT NULL,         -- better | worse | equivalent | inconclusive
    payload TEXT NOT NULL,         -- the whole comparison (estimate, interval, p-values...) as JSON
    PRIMARY KEY (family, metric, technique)
);
CREATE TABLE IF NOT EXISTS alike (
    technique TEXT NOT NULL,       -- a technique's label, compared with the baseline's
    pooling TEXT NOT NULL,
    layer INTEGER NOT NULL,
    verdict TEXT NOT NULL,         -- alike | differs | cannot tell (analyze/alike.py)
    payload TEXT NOT NULL,         -- estimate, interval, p-values, seed floors, note as JSON
    PRIMARY KEY (technique, pooling, layer)
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

VOLATILE = {
    "units": ("seconds", "finished_at"),
    "training": ("seconds",),
    "costs": (
        "seconds_per_step",
        "tokens_per_second",
        "peak_rss_mb",
        "wall_seconds",
        "peak_gpu_mb",
        "first_step_seconds",
    ),
}

ADDED_COST_COLUMNS = ("peak_gpu_mb", "first_step_seconds")
VOLATILE_KV = {"matmul"}  # the machine's GEMM speed when the study last started work

TABLE_KEYS = {
    "metrics": "run_id",
    "examples": "run_id",
    "training": "run_id",
    "costs": "run_id",
    "generations": "run_id",
    "analysis": "run_id",
}


class Store:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open (creating it unless `readonly`) the store at `path`. Read-only opens write
        nothing, not even the schema: a dry run (`whichlora plan`) leaves the folder as it was."""
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            # A store closed cleanly has no -wal file: read it as immutable, so not even the
            # -shm/-wal files appear. One with a -wal (in use, or killed) is read through it.
            wal = self.path.with_name(self.path.name + "-wal").exists()
            uri = f"{self.path.resolve().as_uri()}?{'mode=ro' if wal else 'immutable=1'}"
            self._conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
            return  # a store from before content keys has no units.key: see _key_column
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(units)")}
        if "key" not in columns:  # a store from before content keys: every unit is stale
            self._conn.execute("ALTER TABLE units ADD COLUMN key TEXT")
        costs = {r[1] for r in self._conn.execute("PRAGMA table_info(costs)")}
        for column in ADDED_COST_COLUMNS:  # a store from before per-run peaks: NULL in old rows
            if column not in costs:
                self._conn.execute(f"ALTER TABLE costs ADD COLUMN {column} REAL")
        training = {r[1] for r in self._conn.execute("PRAGMA table_info(training)")}
        if "validation_nll" not in training:  # a store from before learning curves
            self._conn.execute("ALTER TABLE training ADD COLUMN validation_nll REAL")
        for name, kind in (("tokens", "INTEGER"), ("flops", "REAL")):
            if name not in columns:  # a store from before FLOP floors: those units count none
                self._conn.execute(f"ALTER TABLE units ADD COLUMN {name} {kind}")

    @classmethod
    def empty(cls) -> Store:
        """A store with the schema and no rows, in memory: what a folder without results holds."""
        store = cls.__new__(cls)
        store.path, store.readonly = Path(":memory:"), True
        store._conn = sqlite3.connect(":memory:", isolation_level=None)
        store._conn.executescript(SCHEMA)
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # runs and units of work -------------------------------------------------------------
    def add_run(
        self,
        run_id: str,
        technique: str,
        label: str,
        seed: int,
        lr: float,
        sweep: bool,
        config: dict[str, Any],
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    technique,
                    label,
                    seed,
                    lr,
                    int(sweep),
                    json.dumps(config, sort_keys=True),
                ),
            )

    def unit_status(self, run_id: str, stage: str, key: str | None = None) -> str | None:
        """'done' or 'failed' (None when never finished); with `key`, 'stale' when the unit was
        finished with other inputs."""
        row = self._conn.execute(
            f"SELECT status, {self._key_column()} FROM units WHERE run_id=? AND stage=?",
            (run_id, stage),
        ).fetchone()
        if row is None:
            return None
        if key is not None and row[1] != key:
            return "stale"
        return str(row[0])

    def _key_column(self) -> str:
        columns = {r[1] for r in self._conn.execute("PRAGMA table_info(units)")}
        return "key" if "key" in columns else "NULL"

    def units(self) -> dict[tuple[str, str], tuple[str, str | None]]:
        """(run_id, stage) -> (status, key) of every finished unit."""
        key = self._key_column()
        rows = self._conn.execute(f"SELECT run_id, stage, status, {key} FROM units").fetchall()
        return {(r[0], r[1]): (r[2], r[3]) for r in rows}

    def unit_error(self, run_id: str, stage: str) -> str | None:
        row = self._conn.execute(
            "SELECT error FROM units WHERE run_id=? AND stage=?", (run_id, stage)
        ).fetchone()
        return row[0] if row else None

    def finish_unit(
        self,
        run_id: str,
        stage: str,
        rows: dict[str, Iterable[dict[str, Any]]] | None = None,
        *,
        status: str = "done",
        error: str | None = None,
        seconds: float | None = None,
        clear: Iterable[tuple[str, str, tuple[Any, ...]]] | None = None,
        key: str | None = None,
        tokens: int | None = None,
        flops: float | None = None,
    ) -> None:
        """Atomically replace a unit's rows and mark it finished (for inputs `key`), with the
        tokens and FLOPs its work needed where counted.

        `rows` maps table -> rows. What the unit wrote before is deleted first: by default all
        rows of `run_id` in those tables, or exactly the (table, where, params) in `clear`.
        """
        rows = rows or {}
        if clear is None:
            clear = [(table, f"{TABLE_KEYS[table]}=?", (run_id,)) for table in rows]
        with self.transaction() as db:
            for table, where, params in clear:
                db.execute(f"DELETE FROM {table} WHERE {where}", params)
            for table, table_rows in rows.items():
                self._insert(db, table, list(table_rows))
            db.execute(
                "INSERT OR REPLACE INTO units "
                "(run_id, stage, status, key, error, seconds, tokens, flops) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, stage, status, key, error, seconds, tokens, flops),
            )

    @staticmethod
    def _insert(db: sqlite3.Connection, table: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        columns = list(rows[0])
        marks = ", ".join("?" for _ in columns)
        db.executemany(
            f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({marks})",
            [tuple(row[c] for c in columns) for row in rows],
        )

    def replace_table(
        self,
        table: str,
        rows: Iterable[dict[str, Any]],
        stage: str,
        seconds: float | None = None,
        key: str | None = None,
    ) -> None:
        """Replace a whole study-level table (analysis, significance) and mark the stage done."""
        self.replace_tables({table: rows}, stage, seconds, key)

    def replace_tables(
        self,
        tables: dict[str, Iterable[dict[str, Any]]],
        stage: str,
        seconds: float | None = None,
        key: str | None = None,
    ) -> None:
        """Replace several study-level tables in one transaction and mark the stage done."""
        with self.transaction() as db:
            for table, rows in tables.items():
                db.execute(f"DELETE FROM {table}")
                self._insert(db, table, list(rows))
            db.execute(
                "INSERT OR REPLACE INTO units (run_id, stage, status, key, seconds) "
                "VALUES ('study', ?, 'done', ?, ?)",
                (stage, key, seconds),
            )

    def set_kv(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value)))

    def get_kv(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def clear_stage(self, stage: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM units WHERE stage=?", (stage,))

    def forget(self, where: list[tuple[str, str, tuple[Any, ...]]]) -> int:
        """Delete rows (table, where, params) in one transaction; return how many went."""
        gone = 0
        with self.transaction() as db:
            for table, clause, params in where:
                gone += db.execute(f"DELETE FROM {table} WHERE {clause}", params).rowcount
        return gone

    def count(self, where: list[tuple[str, str, tuple[Any, ...]]]) -> int:
        """How many rows the (table, where, params) clauses match."""
        return sum(
            self._conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {clause}", params).fetchone()[0]
            for table, clause, params in where
        )

    def vacuum(self) -> None:
        self._conn.execute("VACUUM")

    # reading ---------------------------------------------------------------------------
    def frame(self, table: str) -> Any:
        import pandas as pd

        return pd.read_sql_query(f"SELECT * FROM {table}", self._conn)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def dump(self, results_only: bool = True) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows, sorted: what 'the same results' means when comparing stores.

        With `results_only`, wall-clock columns (timings, memory, dates) are left out: they differ
        between any two runs of the same study, results must not.
        """
        tables = [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {}
        for table in sorted(tables):
            columns = [r[1] for r in self.query(f"PRAGMA table_info({table})")]
            keep = [c for c in columns if not (results_only and c in VOLATILE.get(table, ()))]
            rows = self.query(f"SELECT {', '.join(keep)} FROM {table}")
            if results_only and table == "kv":
                rows = [r for r in rows if r[0] not in VOLATILE_KV]
            out[table] = sorted(rows, key=repr)
        return out
