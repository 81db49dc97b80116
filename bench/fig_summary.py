"""get_cost_summary over N llm_metrics rows vs the raw SQL GROUP BY on the same file."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio

from bench import db, seed
from bench.config import Sizes
from bench.harness import RESULTS, Figure, call, connect, median, ms, ours, sqlite_url, work_dir
from bench.inprocess import profile_tool

SEED_VERSION = 1
CACHE_FROM = 100_000  # rows; smaller seeds take under a second
GROUP_BY = ["model"]
# The same figures as the tool (calls, tokens by kind, cost, unpriced, inference time), grouped the
# same way, without the joins that compute superseded_cost_usd.
PLAIN_GROUP_BY = """
SELECT model, count(*), sum(prompt_tokens), sum(completion_tokens), sum(total_tokens),
       sum(cache_read_tokens), sum(cache_write_tokens), sum(cost_usd),
       sum(CASE WHEN cost_source = 'unpriced' THEN 1 ELSE 0 END), sum(inference_time_ms), count(inference_time_ms)
FROM llm_metrics GROUP BY model ORDER BY model
"""


def _schema_key(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        ddl = "\n".join(
            row[0] for row in conn.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        )
    finally:
        conn.close()
    return hashlib.sha256(ddl.encode()).hexdigest()[:12]


def seeded_file(rows: int) -> tuple[Path, dict[str, Any]]:
    """A seeded copy in the work dir. Big seeds are cached per (schema, rows, seed version) in
    bench/results/cache, so a re-run on an unchanged schema skips the ~30 s load."""
    path = work_dir() / "summary.db"
    db.remove_sqlite(path)
    info: dict[str, Any] = {}
    cache = RESULTS / "cache" / f"metrics_{rows}_{_schema_key(db.template())}_v{SEED_VERSION}.db"
    if rows >= CACHE_FROM and cache.exists():
        shutil.copyfile(cache, path)
        return path, info | {"cached": True}
    shutil.copyfile(db.template(), path)
    start = time.perf_counter()
    info["seeded"] = seed.seed_metrics(path, rows=rows)
    info["seed_seconds"] = round(time.perf_counter() - start, 1)
    if rows >= CACHE_FROM:
        cache.parent.mkdir(parents=True, exist_ok=True)
        building = cache.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(path, building)
        building.rename(cache)
    return path, info | {"cached": False}


def _run_sql(conn: sqlite3.Connection, statements: list[tuple[str, Any]]) -> float:
    started = time.perf_counter()
    for sql, parameters in statements:
        conn.execute(sql, parameters).fetchall()
    return time.perf_counter() - started


async def _interleaved(url: str, path: Path, tool_sql: list[tuple[str, Any]], repeats: int) -> dict[str, list[float]]:
    """Raw plain GROUP BY, the tool over stdio, and the tool's own SQL run raw, in turn each round,
    so a busy moment on the machine hits all three alike. One warm-up round first."""
    samples: dict[str, list[float]] = {"plain": [], "tool": [], "tool_sql": []}
    conn = sqlite3.connect(path)
    try:
        async with connect(ours(url)) as client:
            for round_ in range(repeats + 1):
                plain = _run_sql(conn, [(PLAIN_GROUP_BY, ())])
                started = time.perf_counter()
                await call(client, "get_cost_summary", {"group_by": GROUP_BY})
                tool = time.perf_counter() - started
                raw = _run_sql(conn, tool_sql)
                if round_:
                    samples["plain"].append(plain)
                    samples["tool"].append(tool)
                    samples["tool_sql"].append(raw)
    finally:
        conn.close()
    return samples


def run(sizes: Sizes) -> Figure:
    path, info = seeded_file(sizes.metric_rows)
    url = sqlite_url(path)
    inproc = anyio.run(profile_tool, url, "get_cost_summary", {"group_by": GROUP_BY}, max(1, sizes.summary_calls // 2))
    tool_sql = [
        (e["sql"], e["parameters"]) for e in inproc.pop("raw_entries") if e["sql"].lstrip().startswith("SELECT")
    ]
    samples = anyio.run(_interleaved, url, path, tool_sql, sizes.summary_calls)
    plain, tool, ours_sql = (median(samples[k]) for k in ("plain", "tool", "tool_sql"))
    conn = sqlite3.connect(path)
    plans = [[row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)] for sql, params in tool_sql]
    conn.close()
    return Figure(
        key="cost_summary",
        title=f"get_cost_summary(group_by=model), {sizes.metric_rows:,} rows vs raw GROUP BY",
        ours=ms(tool),
        reference=ms(plain),
        unit="ms",
        bar="≤ 1.5× raw SQL",
        passed=tool / plain <= 1.5,
        detail={
            "rows": sizes.metric_rows,
            "seed": info,
            "tool_stdio_ms": ms(tool),
            "raw_plain_group_by_ms": ms(plain),
            "raw_tool_sql_ms": ms(ours_sql),
            "samples_ms": {key: [ms(v) for v in values] for key, values in samples.items()},
            "tool_sql_plans": plans,
            "in_process": inproc,
        },
    )
