"""A read's latency on one server while a 50 MB bundle is imported into the same database.

The bundle is made as a user makes one: a source database filled through the server's own tools
(a 10-step pipeline; projects whose steps are recorded twice with ``record_execution``, each output
about ``import_output_kb`` KB of JSON, each with usage, so the bundle holds definitions, projects,
executions, states and cost rows), then written by ``pipeline-state-mcp export -o FILE``. It is
imported as a user imports one: ``pipeline-state-mcp import FILE``, another process on the live
database, while a client of a running server (stdio, the console script) calls ``list_pipelines``
every 10 ms until the import exits. Every read that started before the import exited is a sample.
Several imports run one after another into the same database (samples pooled), each of the bundle
with every id replaced by a new one, so each adds all its rows (an identical bundle would be skipped).

Beside the reads: each import's duration and the largest peak RSS of an importing process
(``VmHWM``, read while it runs), the server's RSS before and its peak (``VmHWM``) after, and on
SQLite the WAL's size (sampled every 20 ms: the largest seen and at the end) and the reads that
started once the WAL began to grow. The import is one transaction: on SQLite it holds the write lock
from its ``BEGIN IMMEDIATE`` to its commit, which readers in WAL mode do not wait for (a write by
the server would).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from bench import db
from bench.config import Sizes
from bench.harness import (
    OURS_COMMAND,
    BenchError,
    Figure,
    call,
    child_pids,
    connect,
    median,
    ms,
    ours,
    percentile,
    read_during_figure,
    rss_kib,
    sqlite_url,
    work_dir,
)
from bench.pipeline import STEPS, define_linear, new_project, record_args

READ_PAUSE_S = 0.01
SAMPLE_PAUSE_S = 0.02
IDLE_READS = 20
ROUNDS_PER_PROJECT = 2  # each project's 10 steps are recorded twice (the second pass re-records a completed step)
MB = 1024 * 1024
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
WORDS = ("state", "pipeline", "step", "output", "budget", "model", "token", "review", "draft", "summary", "cost")


def _output(n: int, kb: int) -> dict[str, Any]:
    """A step's output of about ``kb`` KB of JSON: sections of words, different for every call."""
    rng = random.Random(n)
    sections = [
        {"title": f"section {i} of result {n}", "text": " ".join(rng.choices(WORDS, k=150))} for i in range(max(1, kb))
    ]
    return {"summary": f"result {n}", "sections": sections, "ok": True}


async def _fill_source(url: str, executions: int, output_kb: int) -> dict[str, int]:
    """The source database: projects on a 10-step pipeline, ``executions`` records with sizeable outputs."""
    per_project = STEPS * ROUNDS_PER_PROJECT
    projects = max(1, -(-executions // per_project))
    async with connect(ours(url)) as client:
        await define_linear(client)
        n = 0
        for index in range(projects):
            project_id = await new_project(client, f"bundle {index}")
            for step in range(per_project):
                arguments = record_args(project_id, step)
                arguments["output_data"] = _output(n, output_kb)
                await call(client, "record_execution", arguments)
                n += 1
    return {"projects": projects, "executions": n}


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIPELINE_STATE_DATABASE_URL": url}
    done = subprocess.run(
        [str(OURS_COMMAND), *args], env=env, cwd=work_dir(), capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise BenchError(f"pipeline-state-mcp {args[0]} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done


def make_bundle(executions: int, output_kb: int) -> tuple[Path, dict[str, Any]]:
    """Fill a scratch SQLite database through the tools, then export it with the CLI."""
    source = db.fresh_sqlite("import_source")
    started = time.perf_counter()
    counts = anyio.run(_fill_source, sqlite_url(source), executions, output_kb)
    filled = time.perf_counter() - started
    bundle = work_dir() / "import.bundle.jsonl"
    bundle.unlink(missing_ok=True)
    started = time.perf_counter()
    exported = _cli(sqlite_url(source), "export", "-o", str(bundle))
    info = {
        **counts,
        "output_kb": output_kb,
        "bundle_mb": round(bundle.stat().st_size / MB, 1),
        "fill_s": round(filled, 1),
        "export_s": round(time.perf_counter() - started, 1),
        "export_said": exported.stderr.strip().splitlines()[-1] if exported.stderr.strip() else "",
    }
    db.remove_sqlite(source)
    return bundle, info


def renamed_copy(bundle: Path, number: int) -> Path:
    """The same bundle with every id replaced by a new one (consistently, so every reference holds):
    other projects with the same history, which an import into the same database adds again (the
    pipeline's definitions are identical, so they count as already here)."""
    fresh: dict[str, str] = {}

    def new_id(match: re.Match[str]) -> str:
        return fresh.setdefault(match.group(0), str(uuid.uuid4()))

    copy = bundle.with_name(f"import{number}.bundle.jsonl")
    copy.write_text(UUID.sub(new_id, bundle.read_text(encoding="utf-8")), encoding="utf-8")
    return copy


def _import_process(url: str, bundle: Path) -> dict[str, Any]:
    """``pipeline-state-mcp import`` in its own process; its peak RSS is its ``VmHWM``, read every 10 ms
    until it exits. (Not ``wait4``'s ``ru_maxrss``: Linux carries the parent's high-water mark across the
    fork and exec into it, so a child of this process, which has just read the bundle, would report this
    process's peak.)"""
    env = {**os.environ, "PIPELINE_STATE_DATABASE_URL": url}
    log = work_dir() / "import.log"
    hwm = 0
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as err:
        process = subprocess.Popen(
            [str(OURS_COMMAND), "import", str(bundle)],
            env=env,
            cwd=work_dir(),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        while process.poll() is None:
            with contextlib.suppress(OSError, BenchError):  # it exited between the poll and the read
                hwm = max(hwm, _hwm_kib(process.pid))
            time.sleep(0.01)
    seconds = time.perf_counter() - started
    assert process.stdout is not None
    out = process.stdout.read()  # one line: the CLI prints its report when it is done
    process.stdout.close()
    if process.returncode != 0:
        raise BenchError(f"pipeline-state-mcp import exited {process.returncode}: {log.read_text()[-500:]}")
    return {"import_s": round(seconds, 2), "import_peak_rss_mib": round(hwm / 1024, 1), "said": out.strip()}


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"no VmHWM for pid {pid}")


def _wal_size(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return Path(f"{path}-wal").stat().st_size
    except FileNotFoundError:
        return 0


async def _round(client: Client, url: str, bundle: Path, sqlite_path: Path | None) -> dict[str, Any]:
    """One import with reads alongside: the reads that started before the import exited (and, on
    SQLite, those that started once the WAL began to grow: the import's transaction was writing)."""
    reads: list[tuple[float, float]] = []  # (started, seconds)
    wal: list[tuple[float, int]] = []  # (when, bytes)
    result: dict[str, Any] = {}
    done = anyio.Event()

    async def run_import() -> None:
        try:
            result.update(await anyio.to_thread.run_sync(_import_process, url, bundle))
        finally:
            result["ended"] = time.perf_counter()
            done.set()

    async def read() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await call(client, "list_pipelines")
            reads.append((started, time.perf_counter() - started))
            await anyio.sleep(READ_PAUSE_S)

    async def sample() -> None:
        while not done.is_set():
            wal.append((time.perf_counter(), _wal_size(sqlite_path)))
            await anyio.sleep(SAMPLE_PAUSE_S)

    with anyio.fail_after(900):
        async with anyio.create_task_group() as group:
            group.start_soon(run_import)
            group.start_soon(read)
            group.start_soon(sample)
    ended = result.pop("ended")
    first = wal[0][1] if wal else 0
    growing = [when for when, size in wal if size > first]
    return {
        **result,
        "reads": [seconds for started, seconds in reads if started < ended],
        "reads_writing": [seconds for started, seconds in reads if growing and growing[0] <= started < ended],
        "wal_max": max([0, *(size for _, size in wal)]),
    }


async def measure(url: str, bundles: list[Path], sqlite_path: Path | None) -> dict[str, Any]:
    async with connect(ours(url)) as client:
        servers = child_pids()
        if len(servers) != 1:
            raise BenchError(f"expected one server process, found {sorted(servers)}")
        (server,) = servers
        idle = await _idle_reads(client)
        server_rss_before = rss_kib(server)
        rounds = [await _round(client, url, bundle, sqlite_path) for bundle in bundles]
        server_hwm = _hwm_kib(server)
    samples = [seconds for r in rounds for seconds in r["reads"]]
    if not samples:
        raise BenchError("no read was answered while the import ran")
    detail: dict[str, Any] = {
        "rounds": len(rounds),
        "reads": len(samples),
        "read_p50_ms": ms(median(samples)),
        "read_p99_ms": ms(percentile(samples, 99)),
        "read_max_ms": ms(max(samples)),
        "idle_read_p50_ms": ms(median(idle[5:] or idle)),
        "import_s": [r["import_s"] for r in rounds],
        "import_said": [r["said"] for r in rounds],
        "import_peak_rss_mib": max(r["import_peak_rss_mib"] for r in rounds),
        "server_rss_before_mib": round(server_rss_before / 1024, 1),
        "server_peak_rss_mib": round(server_hwm / 1024, 1),
    }
    if sqlite_path is not None:
        writing = [seconds for r in rounds for seconds in r["reads_writing"]]
        detail |= {
            "wal_max_mb": round(max(r["wal_max"] for r in rounds) / MB, 1),
            "wal_end_mb": round(_wal_size(sqlite_path) / MB, 1),
            "reads_while_wal_grew": len(writing),
            "read_p99_while_wal_grew_ms": ms(percentile(writing, 99)) if writing else None,
            "read_max_while_wal_grew_ms": ms(max(writing)) if writing else None,
        }
    return detail


async def _idle_reads(client: Client) -> list[float]:
    """Warm-up, and the read's time with nothing else running."""
    idle: list[float] = []
    for _ in range(IDLE_READS):
        started = time.perf_counter()
        await call(client, "list_pipelines")
        idle.append(time.perf_counter() - started)
    return idle


def _figure(
    key: str, backend: str, bundle: dict[str, Any], result: dict[str, Any] | None, skipped: str | None
) -> Figure:
    title = f"list_pipelines p99 (p50 beside) during a {bundle['bundle_mb']:.3g} MB bundle import (CLI), {backend}"
    if result is None:
        return read_during_figure(key, title, None, {"skipped": skipped, **bundle})
    bounds = f"import peak RSS {result['import_peak_rss_mib']:.0f} MiB, server {result['server_peak_rss_mib']:.0f} MiB"
    if "wal_max_mb" in result:
        bounds += f", WAL max {result['wal_max_mb']:.0f} MB"
    imports = (
        f"{result['rounds']} imports of {median(result['import_s']):.1f} s"
        if result["rounds"] > 1
        else (f"a {result['import_s'][0]:.1f} s import")
    )
    title += f" ({result['reads']} reads over {imports}; {bounds})"
    return read_during_figure(key, title, result, {"bundle": bundle})


def run(sizes: Sizes) -> list[Figure]:
    bundle, info = make_bundle(sizes.import_executions, sizes.import_output_kb)
    # One bundle per import, the same history under other ids, so every import writes all its rows.
    copies = [renamed_copy(bundle, n) for n in range(sizes.import_rounds)]
    try:
        path = db.fresh_sqlite("import")
        result = anyio.run(measure, sqlite_url(path), copies, path)
        figures = [_figure("read_during_import_sqlite", "SQLite", info, result, None)]
        reason = db.postgres_available()
        if reason is not None:
            figures.append(_figure("read_during_import_postgres", "PostgreSQL", info, None, reason))
            return figures
        with db.scratch_postgres() as pg_url:
            result = anyio.run(measure, pg_url, copies, None)
        figures.append(_figure("read_during_import_postgres", "PostgreSQL", info, result, None))
        return figures
    finally:
        for path in [bundle, *copies]:
            path.unlink(missing_ok=True)


if __name__ == "__main__":  # a bundle on its own: python -m bench.fig_import EXECUTIONS OUTPUT_KB
    print(make_bundle(int(sys.argv[1]), int(sys.argv[2]))[1])
