"""A read's latency on one server while another client of the same server applies a 2,000-step pipeline.

One stdio server, one session, two clients' worth of calls in flight at once (the SDK serves the
requests of a session concurrently, as it would those of two HTTP clients): one task applies the
catalogue (each step with an input and an output schema, so the apply validates thousands of them),
the other calls ``list_pipelines`` every 10 ms until the apply answers. Every read that started
before the apply answered is a sample. An apply that stops the event loop shows as reads of seconds.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
from mcp import Client

from bench import db
from bench.config import Sizes
from bench.harness import Figure, call, connect, median, ms, ours, percentile, read_during_figure, sqlite_url

READ_PAUSE_S = 0.01
IDLE_READS = 20


def catalogue(steps: int, prefix: str) -> list[dict[str, Any]]:
    """Chains of ten steps, each step with a small input and output schema."""
    schema = {"type": "object", "properties": {"text": {"type": "string", "maxLength": 100}}, "required": ["text"]}
    return [
        {
            "process_id": f"{prefix}{n}",
            "name": f"Step {n}",
            **({"depends_on": [f"{prefix}{n - 1}"]} if n % 10 else {}),
            "input_schema": schema,
            "output_schema": schema,
        }
        for n in range(steps)
    ]


async def _round(client: Client, steps: int, pipeline_id: str) -> tuple[list[float], float]:
    """One apply with reads alongside: the latencies of the reads that started before the apply
    answered, and the apply's own duration."""
    reads: list[tuple[float, float]] = []  # (started, seconds)
    span: list[float] = []
    done = anyio.Event()
    processes = catalogue(steps, f"{pipeline_id}_")

    async def apply() -> None:
        span.append(time.perf_counter())
        try:
            await call(client, "apply_pipeline", {"pipeline_id": pipeline_id, "processes": processes})
        finally:
            span.append(time.perf_counter())
            done.set()

    async def read() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await call(client, "list_pipelines")
            reads.append((started, time.perf_counter() - started))
            await anyio.sleep(READ_PAUSE_S)

    with anyio.fail_after(600):
        async with anyio.create_task_group() as group:
            group.start_soon(apply)
            group.start_soon(read)
    return [seconds for started, seconds in reads if started < span[1]], span[1] - span[0]


async def measure(url: str, steps: int, rounds: int) -> dict[str, Any]:
    async with connect(ours(url)) as client:
        idle: list[float] = []
        for _ in range(IDLE_READS):  # warm-up, and the read's time with nothing else running
            started = time.perf_counter()
            await call(client, "list_pipelines")
            idle.append(time.perf_counter() - started)
        reads: list[float] = []
        applies: list[float] = []
        for index in range(rounds):
            samples, seconds = await _round(client, steps, f"big{index}")
            reads += samples
            applies.append(seconds)
    if not reads:
        raise RuntimeError("no read was answered while the apply ran")
    return {
        "steps": steps,
        "rounds": rounds,
        "reads": len(reads),
        "read_p50_ms": ms(median(reads)),
        "read_p99_ms": ms(percentile(reads, 99)),
        "read_max_ms": ms(max(reads)),
        "idle_read_p50_ms": ms(median(idle[5:] or idle)),
        "apply_s": [round(s, 3) for s in applies],
        "reads_per_apply": round(len(reads) / rounds, 1),
    }


def _figure(key: str, backend: str, sizes: Sizes, result: dict[str, Any] | None, skipped: str | None) -> Figure:
    title = f"list_pipelines p99 (p50 beside) during a {sizes.apply_steps:,}-step apply_pipeline, {backend}"
    if result is not None:
        apply_s = median(result["apply_s"])
        title += f" ({result['reads']} reads over {result['rounds']} applies of {apply_s:.1f} s)"
    return read_during_figure(key, title, result, {} if result is not None else {"skipped": skipped})


def run(sizes: Sizes) -> list[Figure]:
    url = sqlite_url(db.fresh_sqlite("apply"))
    figures = [_figure("read_during_apply_sqlite", "SQLite", sizes, anyio.run(measure, url, *_args(sizes)), None)]
    reason = db.postgres_available()
    if reason is not None:
        figures.append(_figure("read_during_apply_postgres", "PostgreSQL", sizes, None, reason))
        return figures
    with db.scratch_postgres() as pg_url:
        result = anyio.run(measure, pg_url, *_args(sizes))
    figures.append(_figure("read_during_apply_postgres", "PostgreSQL", sizes, result, None))
    return figures


def _args(sizes: Sizes) -> tuple[int, int]:
    return sizes.apply_steps, sizes.apply_rounds
