"""Live resources across processes: a record committed through server B, heard by a listener on server A.

Two server processes on one database. A client of A listens (2026-07-28 ``subscriptions/listen``) to a
project's resource; a client of B records a step of that project, again and again; each sample is the time
from B's reply (the commit) to the event on A. The bar: p50 ≤ 1 s on SQLite (A checks ``data_version``
every 0.5 s) and on PostgreSQL (LISTEN/NOTIFY). Beside it: p95, the worst sample, and what 200 more
listen streams on server A add to the servers' resident memory (and what stays once they close).
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack
from typing import Any

import anyio
from mcp.shared.subscriptions import ResourceUpdated

from bench import db
from bench.config import Sizes
from bench.harness import Figure, call, child_pids, connect, median, ms, ours, percentile, rss_kib, sqlite_url

BAR_P50_S = 1.0
CROWD = 200  # listen streams opened on server A at once after the timed samples
BAR_CROWD_MIB = 32  # what they may add to the servers' resident memory


async def measure(url: str, samples: int) -> dict[str, Any]:
    before = child_pids()
    async with connect(ours(url)) as writer, connect(ours(url)) as listener:
        await call(writer, "define_process", {"process_id": "draft", "name": "Draft"})
        project = (await call(writer, "create_project", {"name": "live"}))["id"]
        uri = f"pipeline://projects/{project}"
        latencies: list[float] = []
        missed = 0
        async with listener.listen(resource_subscriptions=[uri]) as events:
            for n in range(samples):
                await anyio.sleep(0.2)  # apart: each sample is one commit, not a burst
                await call(
                    writer, "record_execution", {"project_id": project, "process_id": "draft", "output_data": {"n": n}}
                )
                committed = time.perf_counter()
                try:
                    with anyio.fail_after(5):
                        event = await events.__anext__()
                except TimeoutError:
                    missed += 1
                    continue
                if isinstance(event, ResourceUpdated) and event.uri == uri:
                    latencies.append(time.perf_counter() - committed)
        servers = child_pids() - before
        rss = sum(rss_kib(pid) for pid in servers)
        async with AsyncExitStack() as streams:  # a crowd on server A: what 200 more listeners hold
            for _ in range(CROWD):
                await streams.enter_async_context(listener.listen(resource_subscriptions=[uri]))
            await call(writer, "record_execution", {"project_id": project, "process_id": "draft", "output_data": {}})
            await anyio.sleep(1.5)
            crowded = sum(rss_kib(pid) for pid in servers)
        await anyio.sleep(0.5)
        after = sum(rss_kib(pid) for pid in servers)
    return {
        "samples": samples,
        "heard": len(latencies),
        "missed": missed,
        "p50_ms": ms(median(latencies)) if latencies else None,
        "p95_ms": ms(percentile(latencies, 95)) if latencies else None,
        "max_ms": ms(max(latencies)) if latencies else None,
        "servers_rss_mib": round(rss / 1024, 1),
        "crowd": CROWD,
        "crowd_rss_growth_mib": round((crowded - rss) / 1024, 1),
        "after_crowd_rss_growth_mib": round((after - rss) / 1024, 1),
    }


def run(sizes: Sizes) -> list[Figure]:
    samples = sizes.live_samples
    title = f"commit on server B → event on server A's listener, {samples} records"
    bar = f"p50 ≤ {BAR_P50_S:.0f} s, none missed, {CROWD} listeners ≤ {BAR_CROWD_MIB} MiB"
    figures = []
    results = {"sqlite": anyio.run(measure, sqlite_url(db.fresh_sqlite("live")), samples)}
    reason = db.postgres_available()
    if reason is None:
        with db.scratch_postgres() as url:
            results["postgresql"] = anyio.run(measure, url, samples)
    for name, result in results.items():
        p50 = result["p50_ms"]
        passed = (
            result["missed"] == 0
            and p50 is not None
            and p50 <= BAR_P50_S * 1000
            and result["crowd_rss_growth_mib"] <= BAR_CROWD_MIB
        )
        figures.append(
            Figure(
                key=f"live_{name}",
                title=f"{title} ({name}; p95 {result['p95_ms']} ms, max {result['max_ms']} ms, "
                f"{CROWD} more listeners +{result['crowd_rss_growth_mib']} MiB RSS)",
                ours=p50,
                reference=BAR_P50_S * 1000,
                unit="ms p50",
                bar=bar,
                passed=passed,
                detail=result,
            )
        )
    if reason is not None:
        figures.append(Figure("live_postgresql", title, None, None, "ms p50", bar, None, {"skipped": reason}))
    return figures
