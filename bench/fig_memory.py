"""Server RSS after the first and the second mark of record_execution calls."""

from __future__ import annotations

import anyio

from bench import db
from bench.config import Sizes
from bench.harness import Figure, child_pids, connect, median, ms, ours, rss_kib, sqlite_url, timed_calls
from bench.pipeline import define_linear, new_project, record_args

CHUNK = 100


async def _measure(sizes: Sizes) -> dict[str, object]:
    first, second = sizes.rss_marks
    before = child_pids()
    async with connect(ours(sqlite_url(db.fresh_sqlite("rss")))) as client:
        (pid,) = child_pids() - before
        start_kib = rss_kib(pid)
        await define_linear(client)
        project_id = await new_project(client, "rss")
        # (calls so far, RSS KiB, p50 ms of the last chunk): latency against the project's growing history
        trace: list[tuple[int, int, float | None]] = [(0, start_kib, None)]
        marks: dict[int, int] = {}
        done = 0
        while done < second:
            chunk = min(CHUNK, second - done, (first - done) if done < first else second)
            samples = await timed_calls(
                client, "record_execution", [record_args(project_id, n) for n in range(done, done + chunk)]
            )
            done += chunk
            kib = rss_kib(pid)
            if done in (first, second):
                marks[done] = kib
            if done % max(CHUNK, second // 20) == 0 or done in (first, second):
                trace.append((done, kib, ms(median(samples))))
    return {"pid": pid, "start_kib": start_kib, "marks_kib": marks, "trace_calls_kib_p50ms": trace}


def run(sizes: Sizes) -> Figure:
    result = anyio.run(_measure, sizes)
    first, second = sizes.rss_marks
    marks = result["marks_kib"]
    assert isinstance(marks, dict)
    return Figure(
        key="rss",
        title=f"server RSS after {second:,} / after {first:,} calls",
        ours=marks[second] / 1024,
        reference=marks[first] / 1024,
        unit="MiB",
        bar="≤ 1.1",
        passed=marks[second] / marks[first] <= 1.1,
        detail=result,
    )
