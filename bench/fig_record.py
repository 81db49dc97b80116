"""record_execution (one-call path with usage, 10-step pipeline) p50/p99 vs the floor's no-op call, side by
side, with the CPU each call costs; the same workload on a 2,000-step catalogue; and how long each call holds
the write lock."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from bench import db
from bench.config import Sizes
from bench.harness import (
    Figure,
    child_pids,
    connect,
    floor,
    median,
    ms,
    ours,
    percentile,
    sqlite_url,
    thread_cpu,
    timed_calls,
)
from bench.inprocess import lock_hold
from bench.pipeline import chain_heads, define_linear, define_wide, new_project, record_args

FLOOR_BAR = 4.0  # record_execution p50 against the floor's no-op p50
TAIL_BAR = 3.0  # record_execution p99 against its own p50
BLOCK = 40  # calls in a row to one server before the other server's turn (side by side)


@dataclass
class Side:
    """One server of the side-by-side run: its client, what each timed call sends, and what it measured."""

    client: Client
    tool: str
    arguments: list[dict[str, Any]]
    pid: int
    samples: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=lambda: {"loop": 0.0, "threads": 0.0, "client": 0.0})

    async def block(self, start: int, count: int) -> None:
        """``count`` timed calls, with the CPU they cost the server (its event-loop thread, its other threads)
        and the client process (one side at a time, so what the client process spent is this side's)."""
        before, client_before = thread_cpu(self.pid), time.process_time()
        self.samples += await timed_calls(self.client, self.tool, self.arguments[start : start + count])
        after = thread_cpu(self.pid)
        self.cpu["client"] += time.process_time() - client_before
        for tid, seconds in after.items():
            spent = seconds - before.get(tid, 0.0)
            self.cpu["loop" if tid == self.pid else "threads"] += spent

    def cpu_per_call_ms(self) -> dict[str, float]:
        return {key: ms(value / len(self.samples)) for key, value in self.cpu.items()}


async def side_by_side(sizes: Sizes, name: str) -> dict[str, Side]:
    """The floor's no-op and our record_execution (10-step pipeline), both servers alive at once, timed in
    turns of BLOCK calls, so that a machine whose speed drifts within seconds moves both alike."""
    path = db.fresh_sqlite(name)
    start = sizes.warmup_calls
    before = child_pids()  # a server of an earlier figure may still be exiting
    async with connect(floor()) as floor_client:
        floor_pid = _one(child_pids() - before)
        async with connect(ours(sqlite_url(path))) as client:
            ours_pid = _one(child_pids() - before - {floor_pid})
            await define_linear(client)
            project_id = await new_project(client, name)
            await floor_client.list_tools()
            total = start + sizes.record_calls
            sides = {
                "floor": Side(floor_client, "noop", [{}] * total, floor_pid),
                "ours": Side(client, "record_execution", [record_args(project_id, n) for n in range(total)], ours_pid),
            }
            for side in sides.values():  # warm-up, untimed
                await timed_calls(side.client, side.tool, side.arguments[:start])
            for offset in range(start, total, BLOCK):
                for side in sides.values():
                    await side.block(offset, min(BLOCK, total - offset))
            return sides


def _one(pids: set[int]) -> int:
    if len(pids) != 1:
        raise RuntimeError(f"expected one new server process, found {sorted(pids)}")
    return next(iter(pids))


async def wide_run(sizes: Sizes, name: str) -> list[float]:
    """Timed calls on the first chain of a large catalogue, with a state row recorded for every other
    chain first."""
    path = db.fresh_sqlite(name)
    async with connect(ours(sqlite_url(path))) as client:
        await define_wide(client, sizes.wide_steps)
        project_id = await new_project(client, name)
        warm = [record_args(project_id, n) for n in range(sizes.warmup_calls)]
        heads = chain_heads(sizes.wide_steps)
        warm += [record_args(project_id, n) | {"process_id": head} for n, head in enumerate(heads)]
        await timed_calls(client, "record_execution", warm)
        start = sizes.warmup_calls
        timed = [record_args(project_id, n) for n in range(start, start + sizes.record_calls)]
        return await timed_calls(client, "record_execution", timed)


async def _measure(sizes: Sizes) -> tuple[dict[str, list[list[float]]], list[dict[str, dict[str, float]]]]:
    runs: dict[str, list[list[float]]] = {"ours": [], "floor": [], "wide": []}
    cpu: list[dict[str, dict[str, float]]] = []
    for index in range(sizes.record_runs):
        sides = await side_by_side(sizes, f"record_{index}")
        for key, side in sides.items():
            runs[key].append(side.samples)
        cpu.append({key: side.cpu_per_call_ms() for key, side in sides.items()})
        runs["wide"].append(await wide_run(sizes, f"record_wide_{index}"))
    return runs, cpu


async def _lock(sizes: Sizes) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        return await lock_hold(sqlite_url(Path(scratch) / "lock.db"), sizes.warmup_calls, sizes.record_calls)


def run(sizes: Sizes) -> list[Figure]:
    runs, cpu = anyio.run(_measure, sizes)
    p50 = {key: median([median(samples) for samples in values]) for key, values in runs.items()}
    p99 = {key: median([percentile(samples, 99) for samples in values]) for key, values in runs.items()}
    detail = {
        "runs": sizes.record_runs,
        "calls_per_run": sizes.record_calls,
        "p50_per_run_ms": {k: [ms(median(s)) for s in v] for k, v in runs.items()},
        "p99_per_run_ms": {k: [ms(percentile(s, 99)) for s in v] for k, v in runs.items()},
        "mean_ms": {k: ms(sum(map(sum, v)) / sum(map(len, v))) for k, v in runs.items()},
        "side_by_side": f"floor and ours alive at once, timed in turns of {BLOCK} calls",
        # Where a call's time goes: CPU per call of the server's event-loop thread, of its other threads (on
        # SQLite, a unit of work runs on its connection's thread) and of the client process.
        "cpu_per_call_ms": cpu,
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
