"""The WAL stays bounded: short-lived writer processes commit through the server's own engine while
another connection stays open on the file (as a dashboard or a second server would).

Each writer (``python -m bench.fig_wal URL COMMITS``) opens the engine, commits ``COMMITS`` project
rows with 4 KB of metadata each (several WAL pages per commit) and exits; ``parallel`` run at a
time. The WAL's size is sampled every 20 ms while they run; the figure is its size at the end, with
the largest size seen beside it. Checkpoints are SQLite's own: a process that exits between two
checkpoint points, or a reader that holds a snapshot, must not leave the WAL to grow for ever.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from bench import db
from bench.config import Sizes
from bench.harness import ROOT, Figure, sqlite_url

BOUND_MB = 16.0
MB = 1024 * 1024


def _wal_size(path: Path) -> int:
    try:
        return Path(f"{path}-wal").stat().st_size
    except FileNotFoundError:
        return 0


async def measure(path: Path, writers: int, commits: int, parallel: int) -> dict[str, Any]:
    url = sqlite_url(path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    command = [sys.executable, "-m", "bench.fig_wal", url, str(commits)]
    reader = sqlite3.connect(path)
    sizes: list[int] = []
    try:
        reader.execute("SELECT count(*) FROM projects").fetchone()
        done = anyio.Event()

        async def sample() -> None:
            while not done.is_set():
                sizes.append(_wal_size(path))
                await anyio.sleep(0.02)

        with anyio.fail_after(900):
            async with anyio.create_task_group() as outer:
                outer.start_soon(sample)
                for first in range(0, writers, parallel):
                    async with anyio.create_task_group() as group:
                        for _ in range(min(parallel, writers - first)):
                            group.start_soon(partial(anyio.run_process, command, env=env, cwd=ROOT))
                done.set()
        rows = reader.execute("SELECT count(*) FROM projects").fetchone()[0]
        end = _wal_size(path)
    finally:
        reader.close()
    if rows != writers * commits:
        raise RuntimeError(f"{rows} rows committed, expected {writers * commits}")
    return {
        "writers": writers,
        "commits_per_writer": commits,
        "parallel": parallel,
        "commits": rows,
        "wal_end_mb": round(end / MB, 2),
        "wal_max_mb": round(max([end, *sizes]) / MB, 2),
        "samples": len(sizes),
    }


def run(sizes: Sizes) -> list[Figure]:
    result = anyio.run(measure, db.fresh_sqlite("wal"), sizes.wal_writers, sizes.wal_commits, sizes.wal_parallel)
    title = (
        f"WAL after {result['writers']} short-lived writers × {result['commits_per_writer']} commits, "
        "a reader open (max seen beside it)"
    )
    return [
        Figure(
            key="wal_bound",
            title=title,
            ours=result["wal_end_mb"],
            reference=result["wal_max_mb"],
            unit="MB",
            bar=f"≤ {BOUND_MB:.0f} MB",
            passed=result["wal_end_mb"] <= BOUND_MB,
            detail=result,
        )
    ]


async def _write(url: str, commits: int) -> None:
    """One writer process: ``commits`` commits through the server's engine, then exit."""
    from mcp_server.db.engine import Database
    from mcp_server.repositories import ProjectRepository

    database = Database.connect(url)
    try:
        for number in range(commits):
            async with database.unit_of_work() as session:
                await ProjectRepository(session).create(name=f"w{os.getpid()}-{number}", metadata={"pad": "x" * 4096})
    finally:
        await database.dispose()


if __name__ == "__main__":
    asyncio.run(_write(sys.argv[1], int(sys.argv[2])))
