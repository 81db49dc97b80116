"""The stdio transport under hostile and heavy input, as raw JSON-RPC lines to the installed console
script: size limit without reading the line into memory, a JSON-RPC error for every bad line, and
overload answered `busy` (never `internal`) with one log line per incident."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).parent / "pipeline-state-mcp"
INITIALIZE = (
    b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},'
    b'"clientInfo":{"name":"wire","version":"1"}}}\n{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
)


class Wire:
    def __init__(self, url: str, tmp_path: Path) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PIPELINE_STATE_")}
        env |= {"PIPELINE_STATE_DATABASE_URL": url, "XDG_DATA_HOME": str(tmp_path / "data")}
        self.notifications: list[str] = []
        self.stderr = (tmp_path / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            [str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env, cwd=tmp_path
        )
        self.send(INITIALIZE.rstrip(b"\n"))
        assert self.receive()["id"] == 0

    def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:  # a reply, after any notifications the server sent first (list_changed after a define)
            line = self.process.stdout.readline()
            assert line, "the server closed stdout"
            reply: dict[str, Any] = json.loads(line)
            if "id" in reply or "method" not in reply:
                return reply
            self.notifications.append(reply["method"])

    def call(self, number: int, tool: str, arguments: dict[str, Any]) -> bytes:
        params = {"name": tool, "arguments": arguments}
        return json.dumps({"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": params}).encode()

    def peak_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=30)
        self.release()
        return code

    def release(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Wire]:
    opened = Wire(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)
    try:
        yield opened
    finally:
        opened.release()


def test_a_line_past_4_mib_is_refused_unread_and_bad_lines_get_json_rpc_errors(wire: Wire) -> None:
    wire.send(wire.call(1, "list_projects", {}))  # loads the database layer before the peak is read
    assert wire.receive()["id"] == 1
    before = wire.peak_kib()
    wire.send(wire.call(2, "create_project", {"name": "x" * (40 * 1024 * 1024)}))
    refused = wire.receive()
    assert refused["id"] is None and refused["error"]["code"] == -32600 and "larger than" in refused["error"]["message"]
    assert wire.peak_kib() - before < 16 * 1024, "the 40 MiB line was read into memory"
    cases: list[tuple[bytes, Any, int]] = [
        (b"not json", None, -32700),
        (b"\xff\xfe", None, -32700),
        (b"[" * 2000 + b"]" * 2000, None, -32700),
        (b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"create_project",'
         b'"arguments":{"name":"\\ud800"}}}', 3, -32600),
        (b'[{"jsonrpc":"2.0","id":4,"method":"tools/list"}]', None, -32600),
        (b'{"jsonrpc":"2.0","id":5,"method":"tools/list","params":[]}', 5, -32600),
        (b'{"jsonrpc":"1.0","id":"six","method":"tools/list"}', "six", -32600),
        (b'{"id":true}', None, -32600),
    ]  # fmt: skip
    for line, request_id, code in cases:
        wire.send(line)
        reply = wire.receive()
        assert (reply["id"], reply["error"]["code"]) == (request_id, code), (line[:60], reply)
    wire.send(wire.call(9, "create_project", {"name": "still serving"}))
    assert wire.receive()["result"]["structuredContent"]["name"] == "still serving"
    assert wire.close() == 0


def test_thousands_of_pipelined_calls_get_results_or_busy_never_internal(db_url: str, tmp_path: Path) -> None:
    wire = Wire(db_url, tmp_path)
    try:
        wire.send(wire.call(1, "define_process", {"process_id": "a", "name": "A"}))
        assert wire.receive()["id"] == 1
        wire.send(wire.call(2, "create_project", {"name": "flood"}))
        project = wire.receive()["result"]["structuredContent"]["id"]
        total = 1500
        flood = b"\n".join(
            wire.call(100 + n, "record_execution", {"project_id": project, "process_id": "a", "output_data": {"n": n}})
            for n in range(total)
        )
        wire.send(flood)
        codes: dict[str, int] = {}
        for _ in range(total):
            result = wire.receive()["result"]
            text = result["content"][0]["text"]
            code = text.split(": ")[1] if result["isError"] else "ok"
            codes[code] = codes.get(code, 0) + 1
        assert set(codes) <= {"ok", "busy"}, codes
        assert codes.get("ok", 0) >= 100, codes
        wire.send(wire.call(3, "get_process_state", {"project_id": project, "process_id": "a"}))
        assert wire.receive()["result"]["structuredContent"]["version"] == codes["ok"]  # nothing lost
        assert wire.close() == 0
    finally:
        wire.release()
    log = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in log and len(log.splitlines()) < 20, log[-2000:]
