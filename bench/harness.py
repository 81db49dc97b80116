"""Spawning servers over stdio, calling them, and the small statistics the figures share."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FLOOR_SCRIPT = ROOT / "bench" / "floor_server.py"
# The console script of the environment running the benchmark: what a client would launch.
OURS_COMMAND = Path(sys.executable).parent / "pipeline-state-mcp"
CALL_TIMEOUT_S = 120.0
_errlog: IO[str] | None = None


class BenchError(RuntimeError):
    """A tool call that had to succeed did not."""


_work = RESULTS / "work"


def set_work_dir(path: Path) -> None:
    """Where scratch databases and the servers' log go (a test points it at its tmp_path)."""
    global _work, _errlog
    _work = path
    _errlog = None


def work_dir() -> Path:
    _work.mkdir(parents=True, exist_ok=True)
    return _work


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def ours(url: str, **env: str) -> StdioServerParameters:
    """Our server as a client starts it: the console script, configured by environment only."""
    return StdioServerParameters(
        command=str(OURS_COMMAND), env={"PIPELINE_STATE_DATABASE_URL": url, **env}, cwd=str(work_dir())
    )


def floor() -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=[str(FLOOR_SCRIPT)], cwd=str(work_dir()))


def server_log() -> IO[str]:
    """Servers' stderr goes to one log file, not the table (their INFO logs are normal output)."""
    global _errlog
    if _errlog is None:
        _errlog = (work_dir() / "servers.log").open("a", encoding="utf-8")
    return _errlog


@asynccontextmanager
async def connect(params: StdioServerParameters) -> AsyncIterator[Client]:
    """Spawn the server and complete the MCP handshake with the SDK's default client."""
    async with Client(stdio_client(params, errlog=server_log()), read_timeout_seconds=CALL_TIMEOUT_S) as client:
        yield client


async def call(client: Client, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    """Call a tool that must succeed and return its structured result."""
    result = await client.call_tool(tool, arguments or {})
    if result.is_error:
        text = getattr(result.content[0], "text", "") if result.content else ""
        raise BenchError(f"{tool} failed: {text}")
    return result.structured_content or {}


async def timed_calls(client: Client, tool: str, argument_list: Sequence[dict[str, Any]]) -> list[float]:
    """Seconds per call, measured at the client, one call after another."""
    samples: list[float] = []
    for arguments in argument_list:
        start = time.perf_counter()
        await call(client, tool, arguments)
        samples.append(time.perf_counter() - start)
    return samples


def child_pids() -> set[int]:
    """Live child processes of this process (the stdio servers it spawned)."""
    me = str(os.getpid())
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[1] == me and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) each live thread of a process has used, by thread id (the main thread's id
    is the process id), from /proc/<pid>/task."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        found[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of the samples."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


@dataclass
class Figure:
    """One row of the table: our value, the reference it is compared with, and the bar."""

    key: str
    title: str
    ours: float | None
    reference: float | None
    unit: str
    bar: str
    passed: bool | None
    detail: dict[str, Any]

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.reference in (None, 0):
            return None
        assert self.reference is not None
        return self.ours / self.reference


READ_BAR_MS = 250.0  # a read's p99 while another client's long write runs


def read_during_figure(key: str, title: str, result: dict[str, Any] | None, detail: dict[str, Any]) -> Figure:
    """A read's p99 (its p50 beside) while a long write runs, against READ_BAR_MS. No ``result``: the figure
    was skipped, and ``detail`` says why."""
    bar = f"p99 ≤ {READ_BAR_MS:.0f} ms"
    if result is None:
        return Figure(key, title, None, None, "ms", bar, None, detail)
    p99 = result["read_p99_ms"]
    return Figure(key, title, p99, result["read_p50_ms"], "ms", bar, p99 <= READ_BAR_MS, {**result, **detail})
