"""The stdio transport with the limits HTTP has: a line past 4 MiB is refused without being read into
memory or parsed, and every line that is not a valid JSON-RPC message gets a JSON-RPC error reply
(the SDK's own transport drops such lines silently, leaving the client to wait for its time-out).

The SDK's server reads and writes these ends directly, as the read and write streams of a transport:
each valid line is parsed once into its message (the SDK's ``stdio_server`` would parse it again, and
pass every message through two memory streams and two tasks); replies and errors share one writer, a
whole line at a time, so they never interleave on stdout.

Both ends are read and written on the event loop, non-blocking (the SDK's own transport runs every
read and write on a worker thread: two thread round trips per call). A pipe that is full or empty is
waited on with the loop's readiness (``anyio.wait_writable``/``wait_readable``), so a client that stops
reading holds back only its own replies. Where the descriptor cannot be made non-blocking (a regular
file, some platforms), reads and writes go to a thread as before.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from mcp_server.sdk_gap import serve_streams

if TYPE_CHECKING:
    from mcp_server.server import PipelineStateServer

MAX_LINE_BYTES = 4 * 1024 * 1024  # as the HTTP transport's request body limit
CHUNK = 1 << 16
PARSE_ERROR = -32700
INVALID_REQUEST = -32600


def _nonblocking(fd: int) -> bool:
    """Make ``fd`` non-blocking when waiting on it with the event loop works (pipes, sockets, terminals)."""
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return False  # a file never blocks, and cannot be waited on
        os.set_blocking(fd, False)
    except OSError:
        return False
    return True


class WireOut:
    """stdout as the SDK's server writes a transport (``mcp.shared``'s WriteStream protocol): each message
    a whole line, written by the task that sends it; error replies of the reader share the same lock."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = anyio.Lock()
        self._inline = _nonblocking(fd)

    async def send(self, item: SessionMessage) -> None:
        line = item.message.model_dump_json(by_alias=True, exclude_unset=True) + "\n"  # as the SDK's stdio writer
        await self._send(line.encode())

    async def aclose(self) -> None:
        return None  # the descriptor stays open until the process ends: a late reply never hits a closed fd

    async def __aenter__(self) -> WireOut:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def error(self, request_id: Any, code: int, message: str) -> None:
        reply = {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}
        await self._send((json.dumps(reply) + "\n").encode())

    async def _send(self, data: bytes) -> None:
        async with self._lock:
            if not self._inline:
                await anyio.to_thread.run_sync(self._write_all, data)
                return
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._fd, view) :]
                except BlockingIOError:
                    await anyio.wait_writable(self._fd)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]


def _request_id(value: Any) -> Any:
    """The id of a message that failed validation, when it has a usable one; else null."""
    if isinstance(value, dict):
        found = value.get("id")
        if isinstance(found, str | int) and not isinstance(found, bool):
            return found
    return None


class WireIn:
    """stdin as the SDK's server reads a transport (``mcp.shared``'s ReadStream protocol): each valid
    line parsed once into a JSON-RPC message; everything else is answered here."""

    def __init__(self, fd: int, out: WireOut) -> None:
        self._fd = fd
        self._out = out
        self._inline = _nonblocking(fd)
        self._messages = self._lines()

    async def receive(self) -> SessionMessage | Exception:
        try:
            return SessionMessage(await anext(self._messages))
        except StopAsyncIteration:
            raise anyio.EndOfStream from None

    def __aiter__(self) -> WireIn:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        await self._messages.aclose()

    async def __aenter__(self) -> WireIn:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _read(self) -> bytes:
        if not self._inline:
            # abandon_on_cancel: a shutdown never waits for a read that may block forever.
            return await anyio.to_thread.run_sync(os.read, self._fd, CHUNK, abandon_on_cancel=True)
        while True:
            try:
                return os.read(self._fd, CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)

    async def _lines(self) -> AsyncGenerator[types.JSONRPCMessage, None]:
        buffer = bytearray()
        oversized = False
        while True:
            chunk = await self._read()
            if not chunk:
                break
            start = 0
            while start <= len(chunk):
                end = chunk.find(b"\n", start)
                piece = chunk[start : len(chunk) if end < 0 else end]
                if not oversized:
                    if len(buffer) + len(piece) > MAX_LINE_BYTES:
                        oversized, buffer = True, bytearray()
                    else:
                        buffer += piece
                if end < 0:
                    break
                line = await self._complete(bytes(buffer), oversized)
                if line is not None:
                    yield line
                buffer, oversized, start = bytearray(), False, end + 1
        line = await self._complete(bytes(buffer), oversized)
        if line is not None:
            yield line

    async def _complete(self, raw: bytes, oversized: bool) -> types.JSONRPCMessage | None:
        """The line's message when it is a valid JSON-RPC message; otherwise the error is sent here."""
        if oversized:
            await self._out.error(
                None, INVALID_REQUEST, f"message larger than {MAX_LINE_BYTES} bytes: refused unread; send it smaller"
            )
            return None
        if not raw.strip():
            return None
        try:
            text = raw.decode("utf-8")
            return types.jsonrpc_message_adapter.validate_json(text, by_name=False)
        except UnicodeDecodeError:
            await self._out.error(None, PARSE_ERROR, "Parse error: the line is not UTF-8")
            return None
        except (ValidationError, ValueError, RecursionError):
            pass
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            await self._out.error(None, PARSE_ERROR, "Parse error: the line is not valid JSON (or nests too deeply)")
            return None
        if isinstance(value, list):
            message = "Invalid Request: batches (JSON arrays) are not supported; send one message per line"
        else:
            message = (
                'Invalid Request: not a valid JSON-RPC 2.0 message (jsonrpc "2.0", a method, params as an '
                "object; strings must be valid Unicode)"
            )
        await self._out.error(_request_id(value), INVALID_REQUEST, message)
        return None


def _claim(fd: int, diversion: int) -> int:
    """A private duplicate of ``fd`` for the wire; ``fd`` itself then points at ``diversion``, so stray
    reads get EOF and stray prints go to stderr instead of corrupting the protocol."""
    private = os.dup(fd)
    os.set_inheritable(private, False)
    os.dup2(diversion, fd)
    return private


async def serve(server: PipelineStateServer) -> None:
    """Run the server on this process's stdin and stdout."""
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_RDONLY)
    wire_in, wire_out = _claim(0, null), _claim(1, 2)
    os.close(null)
    out = WireOut(wire_out)
    await serve_streams(server, WireIn(wire_in, out), out)
