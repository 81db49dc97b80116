"""Bulk seeding of a migrated SQLite file, straight in SQL (executemany in big batches).

Rows are written as the server's column types store them on SQLite: UUIDs as 36-character text,
timestamps as naive UTC text ``YYYY-MM-DD HH:MM:SS.ffffff``, money as an integer of 1e-10 USD,
JSON as compact text. Secondary indexes are dropped during the load and rebuilt afterwards (one
sort instead of a million random B-tree inserts), which is what makes a million rows take seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BATCH = 50_000
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# provider, model, USD per million input / output tokens (for a plausible computed cost)
MODELS = (
    ("openai", "gpt-4o-mini", 0.15, 0.6),
    ("openai", "gpt-4o", 2.5, 10.0),
    ("openai", "o3-mini", 1.1, 4.4),
    ("anthropic", "claude-3-5-haiku-latest", 0.8, 4.0),
    ("anthropic", "claude-3-5-sonnet-latest", 3.0, 15.0),
    ("anthropic", "claude-3-opus-latest", 15.0, 75.0),
    ("google", "gemini-1.5-flash", 0.075, 0.3),
    ("google", "gemini-1.5-pro", 1.25, 5.0),
    ("mistral", "mistral-large-latest", 2.0, 6.0),
    ("groq", "llama-3.1-70b-versatile", 0.59, 0.79),
)
UNPRICED = ("custom", "in-house-7b")


def ts(moment: datetime) -> str:
    """A UTC timestamp as SQLAlchemy's SQLite DateTime stores it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, bool]:
    """The table's columns, each with whether it has a default."""
    return {row[1]: row[4] is not None for row in conn.execute(f"PRAGMA table_info({table})")}


def _insert(conn: sqlite3.Connection, table: str, rows: Iterator[dict[str, Any]]) -> int:
    """Insert dict rows in batches; return how many. A column the first row leaves out becomes NULL, or
    takes its default when it has one (columns added by later migrations need no change here)."""
    table_columns = _columns(conn, table)
    first = next(rows, None)
    if first is None:
        return 0
    columns = [name for name, has_default in table_columns.items() if not has_default or name in first]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    count = 0
    batch: list[tuple[Any, ...]] = []
    for row in itertools.chain([first], rows):
        unknown = set(row) - set(table_columns)
        if unknown:
            raise KeyError(f"{table} has no column(s) {sorted(unknown)}")
        batch.append(tuple(row.get(column) for column in columns))
        if len(batch) >= BATCH:
            conn.executemany(sql, batch)
            count += len(batch)
            batch.clear()
    if batch:
        conn.executemany(sql, batch)
        count += len(batch)
    return count


class BulkLoad:
    """A connection that loads fast: no journal or sync during the load, indexes rebuilt at the end."""

    def __init__(self, path: Path, tables: Sequence[str]) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.tables = tables
        self.indexes: list[str] = []

    def __enter__(self) -> sqlite3.Connection:
        conn = self.conn
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -200000")
        marks = ",".join("?" * len(self.tables))
        found = conn.execute(
            f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN ({marks})",
            tuple(self.tables),
        ).fetchall()
        for name, sql in found:
            conn.execute(f'DROP INDEX "{name}"')
            self.indexes.append(sql)
        conn.execute("BEGIN")
        return conn

    def __exit__(self, *exc: object) -> None:
        conn = self.conn
        if "projects" in self.tables and "llm_metrics" in self.tables:
            # The server keeps running cost totals on each project; a bulk load must set them too.
            conn.execute(
                "UPDATE projects SET spent_usd = t.spent, unpriced_calls = t.unpriced FROM"
                " (SELECT project_id, coalesce(sum(cost_usd), 0) AS spent, sum(cost_usd IS NULL) AS unpriced"
                " FROM llm_metrics WHERE project_id IS NOT NULL GROUP BY project_id) AS t"
                " WHERE t.project_id = projects.id"
            )
        conn.execute("COMMIT")
        for sql in self.indexes:
            conn.execute(sql)
        # No ANALYZE: the server never runs it, so the planner works without statistics here too.
        conn.execute("PRAGMA journal_mode = WAL")  # as the server leaves its files
        conn.close()


def _project(rng: random.Random, name: str, when: datetime) -> dict[str, Any]:
    return {
        "id": _uuid(rng),
        "name": name,
        "status": "in_progress",
        "metadata": "{}",
        "budget_usd": 1000 * 10**10,
        "spent_usd": 0,  # recomputed from llm_metrics once the load is done (see BulkLoad)
        "unpriced_calls": 0,
        "created_at": ts(when),
        "updated_at": ts(when),
        "is_deleted": 0,
        "pipeline_id": "default",
        "budget_policy": "warn",
        "reserved_usd": 0,
        "created_by": "bench/1",
        "updated_by": "bench/1",
    }


def _definition(process_id: str, index: int, depends_on: list[str], when: datetime) -> dict[str, Any]:
    return {
        "pipeline_id": "default",
        "id": process_id,
        "name": f"Process {index}",
        "order_index": index,
        "depends_on": json.dumps(depends_on),
        "created_at": ts(when),
        "updated_at": ts(when),
        "created_by": "bench/1",
        "updated_by": "bench/1",
    }


def _dag(rng: random.Random, count: int) -> list[tuple[str, list[str]]]:
    """Process ids p000… with one to three dependencies on earlier processes (p000 has none)."""
    processes: list[tuple[str, list[str]]] = []
    for index in range(count):
        pid = f"p{index:03d}"
        if index == 0:
            deps: list[str] = []
        else:
            earlier = [f"p{i:03d}" for i in rng.sample(range(index), k=min(index, rng.randint(1, 3)))]
            deps = sorted({f"p{index - 1:03d}", *earlier})[:3]
        processes.append((pid, deps))
    return processes


def _execution(
    rng: random.Random, project_id: str, process_id: str, when: datetime, status: str = "completed"
) -> dict[str, Any]:
    output = {"summary": f"output of {process_id}", "n": rng.randint(0, 10**6)}
    text = json.dumps(output, separators=(",", ":"), sort_keys=True)
    return {
        "id": _uuid(rng),
        "project_id": project_id,
        "process_id": process_id,
        "input_data": '{"topic":"benchmark"}',
        "output_data": text,
        "output_hash": hashlib.sha256(text.encode()).hexdigest(),
        "status": status,
        "reasoning": "seeded",
        "started_at": ts(when),
        "completed_at": ts(when + timedelta(seconds=2)),
        "created_at": ts(when),
        "updated_at": ts(when + timedelta(seconds=2)),
        "created_by": "bench/1",
        "updated_by": "bench/1",
    }


def _metric(
    rng: random.Random, *, project_id: str | None, process_id: str | None, execution_id: str | None, when: datetime
) -> dict[str, Any]:
    prompt, completion = rng.randint(200, 8000), rng.randint(50, 2000)
    cache_read = rng.choice((0, 0, 0, prompt // 2))
    if rng.random() < 0.03:
        provider, model = UNPRICED
        cost, source = None, "unpriced"
    else:
        provider, model, price_in, price_out = rng.choice(MODELS)
        # USD per million tokens → integer 1e-10 USD: price × tokens × 1e4
        cost = round((prompt * price_in + completion * price_out) * 10**4)
        source = "computed" if rng.random() < 0.9 else "reported"
    return {
        "id": _uuid(rng),
        "project_id": project_id,
        "process_id": process_id,
        "execution_id": execution_id,
        "provider": provider,
        "model": model,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": 0,
        "cost_usd": cost,
        "cost_source": source,
        "inference_time_ms": rng.randint(200, 20_000) if rng.random() < 0.9 else None,
        "created_at": ts(when),
        "updated_at": ts(when),
        "created_by": "bench/1",
        "updated_by": "bench/1",
    }


def _catalogue_token(conn: sqlite3.Connection, rng: random.Random) -> None:
    """A change token for the seeded catalogue, as every writer of definitions gives one (the servers keep
    a catalogue in memory only while its token holds: mcp_server/services/catalogue.py)."""
    conn.execute(
        "INSERT INTO revisions (name, token) VALUES ('catalogue:default', ?) "
        "ON CONFLICT (name) DO UPDATE SET token = excluded.token",
        (f"{rng.getrandbits(128):032x}",),
    )


def seed_metrics(
    path: Path, *, rows: int, projects: int = 200, processes: int = 10, days: int = 90, seed: int = 7
) -> dict[str, int]:
    """``rows`` llm_metrics rows over projects × processes × days: ~4 calls per execution, and 10% of
    rows logged with report_cost on a project only. Each (project, process) has a state whose current
    execution is its latest one (10% stale), so superseded_cost_usd has real work to do."""
    rng = random.Random(seed)
    span = timedelta(days=days).total_seconds()
    tables = ("projects", "process_definitions", "process_executions", "process_states", "llm_metrics")
    with BulkLoad(path, tables) as conn:
        project_rows = [_project(rng, f"seeded {i}", EPOCH) for i in range(projects)]
        _insert(conn, "projects", iter(project_rows))
        chain = [(f"p{i:03d}", [f"p{i - 1:03d}"] if i else []) for i in range(processes)]
        _insert(conn, "process_definitions", (_definition(pid, i, deps, EPOCH) for i, (pid, deps) in enumerate(chain)))
        _catalogue_token(conn, rng)
        project_ids = [p["id"] for p in project_rows]
        process_ids = [pid for pid, _ in chain]
        executions: list[tuple[str, str, str, datetime]] = []
        for _ in range(max(1, rows * 9 // 10 // 4)):
            when = EPOCH + timedelta(seconds=rng.random() * span)
            status = "completed" if rng.random() < 0.95 else "failed"
            executions.append((rng.choice(project_ids), rng.choice(process_ids), status, when))
        ids: list[str] = []

        def execution_rows() -> Iterator[dict[str, Any]]:
            for project_id, process_id, status, when in executions:
                row = _execution(rng, project_id, process_id, when, status)
                ids.append(row["id"])
                yield row

        _insert(conn, "process_executions", execution_rows())
        latest: dict[tuple[str, str], tuple[datetime, str]] = {}
        for (project_id, process_id, status, when), execution_id in zip(executions, ids, strict=True):
            key = (project_id, process_id)
            if status == "completed" and (key not in latest or latest[key][0] < when):
                latest[key] = (when, execution_id)
        _insert(
            conn,
            "process_states",
            (
                {
                    "id": _uuid(rng),
                    "project_id": project_id,
                    "process_id": process_id,
                    "state": "stale" if rng.random() < 0.1 else "completed",
                    "version": rng.randint(1, 50),
                    "current_execution_id": execution_id,
                    "last_updated_at": ts(when),
                }
                for (project_id, process_id), (when, execution_id) in latest.items()
            ),
        )

        def metric_rows() -> Iterator[dict[str, Any]]:
            for _ in range(rows):
                if rng.random() < 0.9:
                    index = rng.randrange(len(executions))
                    project_id, process_id, _status, when = executions[index]
                    yield _metric(
                        rng,
                        project_id=project_id,
                        process_id=process_id,
                        execution_id=ids[index],
                        when=when + timedelta(seconds=rng.random()),
                    )
                else:
                    when = EPOCH + timedelta(seconds=rng.random() * span)
                    yield _metric(
                        rng, project_id=rng.choice(project_ids), process_id=None, execution_id=None, when=when
                    )

        inserted = _insert(conn, "llm_metrics", metric_rows())
    return {
        "llm_metrics": inserted,
        "process_executions": len(executions),
        "process_states": len(latest),
        "projects": projects,
    }


def seed_status(path: Path, *, processes: int, executions: int, seed: int = 11) -> str:
    """One project on a DAG of ``processes`` with ``executions`` completed executions spread over
    them, each with its usage row (record_execution with usage); states at the latest execution.
    Returns the project id."""
    rng = random.Random(seed)
    tables = ("projects", "process_definitions", "process_executions", "process_states", "llm_metrics")
    with BulkLoad(path, tables) as conn:
        project = _project(rng, "status", EPOCH)
        _insert(conn, "projects", iter([project]))
        dag = _dag(rng, processes)
        _insert(conn, "process_definitions", (_definition(pid, i, deps, EPOCH) for i, (pid, deps) in enumerate(dag)))
        _catalogue_token(conn, rng)
        latest: dict[str, tuple[str, datetime]] = {}
        done: list[tuple[str, str, datetime]] = []

        def execution_rows() -> Iterator[dict[str, Any]]:
            for n in range(executions):
                process_id = dag[n % processes][0]
                when = EPOCH + timedelta(seconds=n)
                row = _execution(rng, project["id"], process_id, when)
                latest[process_id] = (row["id"], when)
                done.append((row["id"], process_id, when))
                yield row

        _insert(conn, "process_executions", execution_rows())
        _insert(
            conn,
            "llm_metrics",
            (
                _metric(rng, project_id=project["id"], process_id=process_id, execution_id=execution_id, when=when)
                for execution_id, process_id, when in done
            ),
        )
        _insert(
            conn,
            "process_states",
            (
                {
                    "id": _uuid(rng),
                    "project_id": project["id"],
                    "process_id": process_id,
                    "state": "completed",
                    "version": executions // processes,
                    "current_execution_id": execution_id,
                    "last_updated_at": ts(when),
                }
                for process_id, (execution_id, when) in latest.items()
            ),
        )
    return str(project["id"])
