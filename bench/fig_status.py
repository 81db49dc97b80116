"""get_pipeline_status at many processes and a long history vs a small pipeline with little history."""

from __future__ import annotations

import time

import anyio

from bench import db, seed
from bench.config import Sizes
from bench.harness import Figure, call, connect, median, ms, ours, sqlite_url
from bench.inprocess import profile_tool


async def _status_over_stdio(url: str, project_id: str, repeats: int) -> list[float]:
    async with connect(ours(url)) as client:
        await call(client, "get_pipeline_status", {"project_id": project_id})  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            await call(client, "get_pipeline_status", {"project_id": project_id})
            times.append(time.perf_counter() - start)
    return times


def run(sizes: Sizes) -> Figure:
    measured = {}
    for name, (processes, executions) in (("small", sizes.status_small), ("large", sizes.status_large)):
        path = db.fresh_sqlite(f"status_{name}")
        start = time.perf_counter()
        project_id = seed.seed_status(path, processes=processes, executions=executions)
        seeded = time.perf_counter() - start
        url = sqlite_url(path)
        times = anyio.run(_status_over_stdio, url, project_id, sizes.status_calls)
        inproc = anyio.run(profile_tool, url, "get_pipeline_status", {"project_id": project_id}, 3)
        inproc.pop("raw_entries")
        measured[name] = {
            "processes": processes,
            "executions": executions,
            "seed_seconds": round(seeded, 1),
            "median_ms": ms(median(times)),
            "samples_ms": [ms(t) for t in times],
            "in_process": inproc,
        }
    large, small = measured["large"]["median_ms"], measured["small"]["median_ms"]
    (lp, le), (sp, se) = sizes.status_large, sizes.status_small
    return Figure(
        key="pipeline_status",
        title=f"get_pipeline_status {lp} proc/{le:,} exec vs {sp}/{se:,}",
        ours=large,
        reference=small,
        unit="ms",
        bar="≤ 2×",
        passed=large / small <= 2,
        detail=measured,
    )
