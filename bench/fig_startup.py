"""Cold start: spawn → handshake → tools/list, ours (migrated file, and first start) vs the floor."""

from __future__ import annotations

import time

import anyio
from mcp import StdioServerParameters

from bench import db
from bench.config import Sizes
from bench.harness import Figure, connect, floor, median, ms, ours, sqlite_url


async def cold_start(params: StdioServerParameters) -> float:
    """Seconds from spawning the process to the tools/list reply (process exit not included)."""
    start = time.perf_counter()
    async with connect(params) as client:
        tools = await client.list_tools()
        elapsed = time.perf_counter() - start
    if not tools.tools:
        raise RuntimeError("the server listed no tools")
    return elapsed


async def _measure(sizes: Sizes) -> dict[str, list[float]]:
    migrated = db.fresh_sqlite("cold")
    await cold_start(ours(sqlite_url(migrated)))  # warm the OS caches for both before timing
    await cold_start(floor())
    samples: dict[str, list[float]] = {"ours": [], "floor": [], "first_start": []}
    for _ in range(sizes.cold_runs):  # interleaved, so drift in the machine hits both alike
        samples["floor"].append(await cold_start(floor()))
        samples["ours"].append(await cold_start(ours(sqlite_url(migrated))))
    for run in range(sizes.migrate_runs):
        fresh = db.unmigrated_sqlite(f"first_start_{run}")
        samples["first_start"].append(await cold_start(ours(sqlite_url(fresh))))
    return samples


def run(sizes: Sizes) -> list[Figure]:
    samples = anyio.run(_measure, sizes)
    ours_s, floor_s, first_s = (median(samples[k]) for k in ("ours", "floor", "first_start"))
    raw = {key: [ms(v) for v in values] for key, values in samples.items()}
    return [
        Figure(
            key="cold_start",
            title="cold start: spawn → init → tools/list (migrated SQLite)",
            ours=ms(ours_s),
            reference=ms(floor_s),
            unit="ms",
            bar="≤ 1.5× floor",
            passed=ours_s / floor_s <= 1.5,
            detail={"samples_ms": raw, "runs": sizes.cold_runs},
        ),
        Figure(
            key="cold_start_first",
            title="first start on a fresh file (with migration)",
            ours=ms(first_s),
            reference=ms(floor_s),
            unit="ms",
            bar="(info)",
            passed=None,
            detail={"samples_ms": raw["first_start"], "runs": sizes.migrate_runs},
        ),
    ]
