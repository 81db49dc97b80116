"""record_execution (one-call path with usage, 10-step pipeline) p50/p99 vs the floor's no-op call."""

from __future__ import annotations

import anyio

from bench import db
from bench.config import Sizes
from bench.harness import Figure, connect, floor, median, ms, ours, percentile, sqlite_url, timed_calls
from bench.pipeline import define_linear, new_project, record_args


async def record_run(sizes: Sizes, name: str) -> list[float]:
    path = db.fresh_sqlite(name)
    async with connect(ours(sqlite_url(path))) as client:
        await define_linear(client)
        project_id = await new_project(client, name)
        warm = [record_args(project_id, n) for n in range(sizes.warmup_calls)]
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
    runs: dict[str, list[list[float]]] = {"ours": [], "floor": []}
    for index in range(sizes.record_runs):
        runs["floor"].append(await floor_run(sizes))
        runs["ours"].append(await record_run(sizes, f"record_{index}"))
    return runs


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
    return [
        Figure(
            key="record_p50",
            title="record_execution p50 (stdio, SQLite) vs floor no-op p50",
            ours=ms(p50["ours"]),
            reference=ms(p50["floor"]),
            unit="ms",
            bar="≤ 2.0× floor",
            passed=p50["ours"] / p50["floor"] <= 2.0,
            detail=detail,
        ),
        Figure(
            key="record_p99",
            title="record_execution p99 vs floor no-op p99",
            ours=ms(p99["ours"]),
            reference=ms(p99["floor"]),
            unit="ms",
            bar="(info)",
            passed=None,
            detail={},
        ),
    ]
