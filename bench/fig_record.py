"""record_execution (one-call path with usage, 10-step pipeline) p50/p99 vs the floor's no-op call; the
same workload on a 2,000-step catalogue; and how long each call holds the write lock."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio

from bench import db
from bench.config import Sizes
from bench.harness import Figure, connect, floor, median, ms, ours, percentile, sqlite_url, timed_calls
from bench.inprocess import lock_hold
from bench.pipeline import chain_heads, define_linear, define_wide, new_project, record_args

FLOOR_BAR = 4.0  # record_execution p50 against the floor's no-op p50
TAIL_BAR = 3.0  # record_execution p99 against its own p50


async def record_run(sizes: Sizes, name: str, *, wide: bool = False) -> list[float]:
    """Timed calls on the 10-step pipeline, or (``wide``) on its first chain inside a large catalogue,
    with a state row recorded for every other chain first."""
    path = db.fresh_sqlite(name)
    async with connect(ours(sqlite_url(path))) as client:
        if wide:
            await define_wide(client, sizes.wide_steps)
        else:
            await define_linear(client)
        project_id = await new_project(client, name)
        warm = [record_args(project_id, n) for n in range(sizes.warmup_calls)]
        if wide:
            heads = chain_heads(sizes.wide_steps)
            warm += [record_args(project_id, n) | {"process_id": head} for n, head in enumerate(heads)]
        await timed_calls(client, "record_execution", warm)
        start = sizes.warmup_calls
        timed = [record_args(project_id, n) for n in range(start, start + sizes.record_calls)]
        return await timed_calls(client, "record_execution", timed)


async def floor_run(sizes: Sizes) -> list[float]:
    async with connect(floor()) as client:
        await client.list_tools()
        await timed_calls(client, "noop", [{}] * sizes.warmup_calls)
        return await timed_calls(client, "noop", [{}] * sizes.record_calls)


async def _measure(sizes: Sizes) -> dict[str, list[list[float]]]:
    runs: dict[str, list[list[float]]] = {"ours": [], "floor": [], "wide": []}
    for index in range(sizes.record_runs):
        runs["floor"].append(await floor_run(sizes))
        runs["ours"].append(await record_run(sizes, f"record_{index}"))
        runs["wide"].append(await record_run(sizes, f"record_wide_{index}", wide=True))
    return runs


async def _lock(sizes: Sizes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        return await lock_hold(sqlite_url(Path(scratch) / "lock.db"), sizes.warmup_calls, sizes.record_calls)


def run(sizes: Sizes) -> list[Figure]:
    runs = anyio.run(_measure, sizes)
    p50 = {key: median([median(samples) for samples in values]) for key, values in runs.items()}
    p99 = {key: median([percentile(samples, 99) for samples in values]) for key, values in runs.items()}
    detail = {
        "runs": sizes.record_runs,
        "calls_per_run": sizes.record_calls,
        "p50_per_run_ms": {k: [ms(median(s)) for s in v] for k, v in runs.items()},
        "p99_per_run_ms": {k: [ms(percentile(s, 99)) for s in v] for k, v in runs.items()},
        "mean_ms": {k: ms(sum(map(sum, v)) / sum(map(len, v))) for k, v in runs.items()},
    }
    lock = anyio.run(_lock, sizes)
    return [
        Figure(
            key="record_p50",
            title="record_execution p50 (stdio, SQLite) vs floor no-op p50",
            ours=ms(p50["ours"]),
            reference=ms(p50["floor"]),
            unit="ms",
            bar=f"≤ {FLOOR_BAR:.1f}× floor (goal 2.0×)",
            passed=p50["ours"] / p50["floor"] <= FLOOR_BAR,
            detail=detail,
        ),
        Figure(
            key="record_p99",
            title="record_execution p99 vs its own p50 (the tail; floor no-op p99 in the JSON)",
            ours=ms(p99["ours"]),
            reference=ms(p50["ours"]),
            unit="ms",
            bar=f"≤ {TAIL_BAR:.0f}× p50",
            passed=p99["ours"] / p50["ours"] <= TAIL_BAR,
            detail={"floor_p99_ms": ms(p99["floor"]), "floor_p50_ms": ms(p50["floor"])},
        ),
        Figure(
            key="record_wide",
            title=f"record_execution p50, {sizes.wide_steps}-step catalogue vs 10 steps",
            ours=ms(p50["wide"]),
            reference=ms(p50["ours"]),
            unit="ms",
            bar="≤ 2×",
            passed=p50["wide"] / p50["ours"] <= 2.0,
            detail={"steps": sizes.wide_steps, "state_rows": len(chain_heads(sizes.wide_steps)) + 10},
        ),
        Figure(
            key="record_lock_hold",
            title="write lock held per record_execution, p50 (p99 in the JSON), vs the call in-process",
            ours=lock["hold_p50_ms"],
            reference=lock["call_p50_ms"],
            unit="ms",
            bar="(info)",
            passed=None,
            detail=lock,
        ),
    ]
