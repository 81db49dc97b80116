"""Throughput of 1 and of N server processes on one database (SQLite file, then PostgreSQL)."""

from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from bench import db
from bench.config import Sizes
from bench.harness import Figure, child_pids, connect, ours, sqlite_url
from bench.pipeline import define_linear, new_project, record_args

WARMUP = 3  # calls per process before the clock starts (first calls load lazy imports)
TIMEOUT_S = 600  # a stuck server fails the figure instead of hanging the run


async def _worker(
    client: Client, project_id: str, calls: int, start: anyio.Event, errors: list[str], done: list[float]
) -> None:
    await start.wait()
    for n in range(WARMUP, WARMUP + calls):
        try:
            result = await client.call_tool("record_execution", record_args(project_id, n))
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if result.is_error:
            errors.append(getattr(result.content[0], "text", "?") if result.content else "?")
    done.append(time.perf_counter())


async def _session(
    url: str, index: int, calls: int, ready: list[Any], start: anyio.Event, out: dict[str, Any], *, own_db: bool
) -> None:
    async with connect(ours(url)) as client:
        if index == 0 or own_db:
            await define_linear(client)
        if index == 0:
            out["defined"].set()
        await out["defined"].wait()
        project_id = await new_project(client, f"throughput {index}")
        for n in range(WARMUP):
            await client.call_tool("record_execution", record_args(project_id, n))
        ready.append(index)
        if len(ready) == out["procs"]:
            out["cpu0"] = cpu_snapshot()
            out["t0"] = time.perf_counter()
            start.set()
        await _worker(client, project_id, calls, start, out["errors"], out["done"])
        if len(out["done"]) == out["procs"]:  # the last one done; every session stays open until then
            out["cpu1"] = cpu_snapshot()
            out["finished"].set()
        await out["finished"].wait()


def _ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _machine() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # all ticks, idle + iowait ticks


def cpu_snapshot() -> dict[str, Any]:
    """CPU ticks of each server process, of this (client) process and of the whole machine."""
    return {
        "servers": {pid: _ticks(pid) for pid in child_pids()},
        "client": time.process_time(),
        "machine": _machine(),
    }


def _cpu_report(before: dict[str, Any], after: dict[str, Any], calls: int, seconds: float) -> dict[str, Any]:
    """Where the CPU went while the clock ran: ours (servers, client) and the machine's, others included."""
    hz = os.sysconf("SC_CLK_TCK")
    servers = sum(after["servers"].get(pid, 0) - ticks for pid, ticks in before["servers"].items()) / hz
    client = after["client"] - before["client"]
    total, idle = (a - b for a, b in zip(after["machine"], before["machine"], strict=True))
    cpus = os.cpu_count() or 1
    return {
        "server_cpu_s": round(servers, 2),
        "client_cpu_s": round(client, 2),
        "server_cpu_ms_per_call": round(1000 * servers / calls, 2),
        "machine_busy_pct": round(100 * (1 - idle / total), 1) if total else None,
        "ours_pct_of_machine": round(100 * (servers + client) / (seconds * cpus), 1),
    }


async def throughput(url: str, procs: int, calls_per_proc: int, *, own_dbs: list[str] | None = None) -> dict[str, Any]:
    """All sessions connect and warm up first; the clock runs from the last one ready to the last done.
    ``own_dbs``: one database per process instead (nothing shared: what the machine itself allows)."""
    out: dict[str, Any] = {
        "procs": procs,
        "errors": [],
        "done": [],
        "defined": anyio.Event(),
        "finished": anyio.Event(),
    }
    start = anyio.Event()
    ready: list[int] = []
    with anyio.fail_after(TIMEOUT_S):
        async with anyio.create_task_group() as group:
            for index in range(procs):
                own = own_dbs[index] if own_dbs else url
                group.start_soon(partial(_session, own, index, calls_per_proc, ready, start, out, own_db=bool(own_dbs)))
    elapsed = max(out["done"]) - out["t0"]
    total = procs * calls_per_proc
    ok = total - len(out["errors"])
    return _cpu_report(out["cpu0"], out["cpu1"], total, elapsed) | {
        "procs": procs,
        "calls": total,
        "errors": len(out["errors"]),
        "first_errors": out["errors"][:5],
        "seconds": round(elapsed, 3),
        "calls_per_s": round(ok / elapsed, 2),
    }


SHARED_BAR = 0.85  # processes on one SQLite file against the same processes each on its own file
POSTGRES_BAR = 1.0  # PostgreSQL: N processes against one (there is no "apart" control for a server)


def _errors(*runs: dict[str, Any]) -> int:
    return sum(run["errors"] for run in runs)


def _sqlite_figures(sizes: Sizes, single: dict[str, Any], multi: dict[str, Any], apart: dict[str, Any]) -> list[Figure]:
    """The bar is the shared file against the control (as many processes, each on its own file): what
    the shared file costs, on whatever cores this machine has. One process is the reference of the
    control's row (the cores' ceiling)."""
    shared_vs_apart = multi["calls_per_s"] / apart["calls_per_s"]
    detail = {
        "single": single,
        "multi": multi,
        "apart": apart,
        "machine_ceiling_ratio": round(apart["calls_per_s"] / single["calls_per_s"], 2),
        "multi_vs_single": round(multi["calls_per_s"] / single["calls_per_s"], 2),
        "shared_vs_apart": round(shared_vs_apart, 3),
    }
    n, calls = sizes.procs, sizes.calls_per_proc
    return [
        Figure(
            key="throughput_sqlite",
            title=f"{n} procs × {calls} record_execution on one SQLite file vs each on its own file",
            ours=multi["calls_per_s"],
            reference=apart["calls_per_s"],
            unit="calls/s",
            bar=f"0 errors, ≥ {SHARED_BAR}× apart",
            passed=_errors(single, multi, apart) == 0 and shared_vs_apart >= SHARED_BAR,
            detail=detail,
        ),
        Figure(
            key="throughput_apart",
            title=f"{n} procs × {calls} record_execution each on its own file vs 1 process (cores' ceiling)",
            ours=apart["calls_per_s"],
            reference=single["calls_per_s"],
            unit="calls/s",
            bar="(info)",
            passed=None,
            detail={},
        ),
    ]


def run_sqlite(sizes: Sizes) -> list[Figure]:
    single = anyio.run(throughput, sqlite_url(db.fresh_sqlite("tp_single")), 1, sizes.single_calls)
    multi = anyio.run(throughput, sqlite_url(db.fresh_sqlite("tp_multi")), sizes.procs, sizes.calls_per_proc)
    own = [sqlite_url(db.fresh_sqlite(f"tp_apart_{index}")) for index in range(sizes.procs)]
    apart = anyio.run(partial(throughput, own[0], sizes.procs, sizes.calls_per_proc, own_dbs=own))
    return _sqlite_figures(sizes, single, multi, apart)


def run_postgres(sizes: Sizes) -> Figure:
    title = f"{sizes.procs} procs × {sizes.calls_per_proc} record_execution, PostgreSQL, vs 1 process"
    bar = f"0 errors, ≥ {POSTGRES_BAR:.0f}× one process"
    reason = db.postgres_available()
    if reason is not None:
        return Figure("throughput_postgres", title, None, None, "calls/s", bar, None, {"skipped": reason})
    with db.scratch_postgres() as url:
        single = anyio.run(throughput, url, 1, sizes.single_calls)
    with db.scratch_postgres() as url:
        multi = anyio.run(throughput, url, sizes.procs, sizes.calls_per_proc)
    passed = _errors(single, multi) == 0 and multi["calls_per_s"] >= POSTGRES_BAR * single["calls_per_s"]
    detail = {"single": single, "multi": multi}
    return Figure(
        "throughput_postgres", title, multi["calls_per_s"], single["calls_per_s"], "calls/s", bar, passed, detail
    )
