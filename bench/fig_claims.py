"""A team of workers on one SQLite file: each its own server process, each looping claim → record.

Workers call ``start_execution`` without ``process_id`` (a claim) and record what they got, until a
claim answers ``nothing_ready`` with nothing left. The steps are independent, so while any step is
neither completed nor held there is work to claim: a ``nothing_ready`` or a ``conflict`` then is a
miss (the bar: none). Claims per second count every claim that got a step; the claim's p50 and p99
and the WAL's size at the end are measured beside it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio

from bench import db
from bench.config import Sizes
from bench.harness import Figure, call, connect, median, ms, ours, percentile, sqlite_url


async def _worker(url: str, project: str, stats: dict[str, Any]) -> None:
    async with connect(ours(url)) as client:
        while True:
            started = time.perf_counter()
            result = await client.call_tool("start_execution", {"project_id": project})
            elapsed = time.perf_counter() - started
            if result.is_error:
                text = getattr(result.content[0], "text", "")
                if ": nothing_ready: " in text:
                    details = json.loads(text.split("details: ", 1)[1])
                    if details["remaining"] == 0:
                        return
                    if details["remaining"] > len(details["running"]):
                        stats["misses"] += 1  # claimable work was there
                    await anyio.sleep(0.01)
                    continue
                stats["misses" if ": conflict: " in text else "errors"] += 1
                stats["messages"].append(text[:300])
                continue
            stats["claims"].append(elapsed)
            claimed = result.structured_content or {}
            await call(
                client,
                "record_execution",
                {
                    "project_id": project,
                    "process_id": claimed["state"]["process_id"],
                    "execution_id": claimed["execution"]["id"],
                    "output_data": {"done": True},
                },
            )


async def _watch_wal(wal: anyio.Path, sizes: list[int]) -> None:
    """The WAL's size every 100 ms while the workers run (it goes when the last connection closes)."""
    while True:
        if await wal.exists():
            sizes.append((await wal.stat()).st_size)
        await anyio.sleep(0.1)


async def measure(url: str, workers: int, steps: int) -> dict[str, Any]:
    async with connect(ours(url)) as client:
        processes = [{"process_id": f"t{n}", "name": f"Task {n}"} for n in range(steps)]
        await call(client, "apply_pipeline", {"pipeline_id": "team", "processes": processes})
        project = (await call(client, "create_project", {"name": "team", "pipeline_id": "team"}))["id"]
    stats: dict[str, Any] = {"claims": [], "misses": 0, "errors": 0, "messages": []}
    wal_sizes = [0]
    started = time.perf_counter()
    with anyio.fail_after(900):
        async with anyio.create_task_group() as outer:
            outer.start_soon(_watch_wal, anyio.Path(url.removeprefix("sqlite:///") + "-wal"), wal_sizes)
            async with anyio.create_task_group() as group:
                for _ in range(workers):
                    group.start_soon(_worker, url, project, stats)
            outer.cancel_scope.cancel()
    seconds = time.perf_counter() - started
    claims: list[float] = stats["claims"]
    wal = max(wal_sizes)
    return {
        "workers": workers,
        "steps": steps,
        "claims": len(claims),
        "claims_per_s": round(len(claims) / seconds, 1),
        "claim_p50_ms": ms(median(claims)),
        "claim_p99_ms": ms(percentile(claims, 99)),
        "misses": stats["misses"],
        "errors": stats["errors"],
        "messages": stats["messages"][:5],
        "seconds": round(seconds, 2),
        "wal_mib": round(wal / 1_048_576, 2),
    }


def run(sizes: Sizes) -> Figure:
    url = sqlite_url(db.fresh_sqlite("claims"))
    result = anyio.run(measure, url, sizes.procs, sizes.claim_steps)
    passed = result["misses"] == 0 and result["errors"] == 0 and result["claims"] == sizes.claim_steps
    return Figure(
        key="claim_record",
        title=(
            f"{sizes.procs} workers claim → record {sizes.claim_steps} steps on one SQLite file: claims/s "
            f"(claim p99 {result['claim_p99_ms']} ms, WAL at most {result['wal_mib']} MiB); misses beside"
        ),
        ours=result["claims_per_s"],
        reference=result["misses"],
        unit="claims/s",
        bar="0 misses, 0 errors, every step once",
        passed=passed,
        detail=result,
    )
