"""A private PostgreSQL instance for tests that stop and start it, never the shared server.

initdb/pg_ctl come from PIPELINE_STATE_TEST_PG_BIN, the PATH or /usr/lib/postgresql/*/bin. Run as root,
they run as the `postgres` user (PostgreSQL refuses to run as root) in a temporary directory it owns.
The instance asks for a password (scram-sha-256) so that tests can also use a wrong one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest

from tests.conftest import IN_CI

# Characters that need escaping in a URL and are easy to spot in a log if they leak.
PASSWORD = "Pw-7f3@k:9/x%Q"


def _bin_dir() -> Path | None:
    configured = os.environ.get("PIPELINE_STATE_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PrivatePostgres:
    bin_dir: Path
    directory: Path
    port: int

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def url(self, *, password: str = PASSWORD, database: str = "postgres") -> str:
        return f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"

    def _pg_ctl_args(self, action: str) -> list[str]:
        data = str(self.directory / "data")
        if action == "start":
            options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
            return ["-D", data, "-l", str(self.directory / "server.log"), "-o", options, "-w", "-t", "60", "start"]
        return ["-D", data, "-m", "fast", "-w", "-t", "60", "stop"]

    def start_sync(self) -> None:
        subprocess.run(self._command("pg_ctl", *self._pg_ctl_args("start")), check=True, capture_output=True)

    def stop_sync(self) -> None:
        subprocess.run(self._command("pg_ctl", *self._pg_ctl_args("stop")), check=True, capture_output=True)

    async def start(self) -> None:
        await anyio.run_process(self._command("pg_ctl", *self._pg_ctl_args("start")))

    async def stop(self) -> None:
        await anyio.run_process(self._command("pg_ctl", *self._pg_ctl_args("stop")))

    def log(self) -> str:
        path = self.directory / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """initdb a fresh cluster on a free port, start it, and remove it afterwards."""
    bin_dir = _bin_dir()
    message = None
    if bin_dir is None or not (bin_dir / "initdb").exists():
        message = "initdb/pg_ctl not found (set PIPELINE_STATE_TEST_PG_BIN)"
    elif os.geteuid() == 0 and shutil.which("runuser") is None:
        message = "running as root needs runuser to start PostgreSQL as the postgres user"
    if message is not None:
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's tmp_path: the postgres user must be able to reach the directory.
    directory = Path(tempfile.mkdtemp(prefix="pst-private-pg-"))
    instance = PrivatePostgres(bin_dir=bin_dir, directory=directory, port=_free_port())
    password_file = directory / "password"
    password_file.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
        shutil.chown(password_file, "postgres")
    try:
        subprocess.run(
            instance._command(
                "initdb", "-D", str(directory / "data"), "-U", "postgres", "-A", "scram-sha-256",
                f"--pwfile={password_file}", "-E", "UTF8", "--locale=C", "--no-sync",
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        password_file.unlink()
        instance.start_sync()
        yield instance
    finally:
        if (directory / "data" / "postmaster.pid").exists():
            subprocess.run(instance._command("pg_ctl", *instance._pg_ctl_args("stop")), capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)
