"""Streamable HTTP: the MCP app at /mcp (a token required when one is set, loopback names only on a
loopback bind), and uvicorn serving it or the dashboard with a time limit on every request."""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, Any

from mcp_server.settings import Settings

if TYPE_CHECKING:
    import asyncio

    from mcp.server.transport_security import TransportSecuritySettings

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
# Seconds a client has to send a whole request (line, headers and body) from when it connects or its
# previous response ended; a slower one is disconnected. Uvicorn has no such timeout of its own.
HEADER_TIMEOUT_VARIABLE = "PIPELINE_STATE_HTTP_HEADER_TIMEOUT"
DEFAULT_HEADER_TIMEOUT = 10.0


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def http_app(settings: Settings, *, host: str, stateless: bool) -> Any:
    """The ASGI app for streamable HTTP at /mcp; refuses a non-loopback host without a token."""
    token = settings.auth_token.get_secret_value() if settings.auth_token else ""
    if not is_loopback(host) and not token:
        raise SystemExit(
            f"refusing to serve HTTP on non-loopback host {host!r} without PIPELINE_STATE_AUTH_TOKEN; "
            "set a token (clients send Authorization: Bearer <token>) or bind 127.0.0.1"
        )
    from mcp_server.server import build_server
    from mcp_server.transport.auth import require_token

    server = build_server(settings)
    security = loopback_security(host) if is_loopback(host) else None
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        stateless_http=stateless,
        host=host,
        transport_security=security,
        session_idle_timeout=settings.http_session_idle_timeout,
        max_sessions=settings.http_max_sessions,
    )
    return require_token(app, token) if token else app


def loopback_security(host: str) -> TransportSecuritySettings:
    """DNS-rebinding protection for a loopback bind: Host and Origin must name a local address.

    The SDK turns it on by itself only for the literal hosts 127.0.0.1, localhost and ::1; any other
    loopback bind (127.0.0.2, LOCALHOST, [::1]) would otherwise serve a page from any origin."""
    from mcp.server.transport_security import TransportSecuritySettings

    bare = host.strip("[]").lower()
    names = sorted({"127.0.0.1", "localhost", "[::1]", f"[{bare}]" if ":" in bare else bare})
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in names],
        allowed_origins=[f"http://{name}:*" for name in names],
    )


def header_timeout() -> float:
    """PIPELINE_STATE_HTTP_HEADER_TIMEOUT (seconds, > 0), else DEFAULT_HEADER_TIMEOUT."""
    given = os.environ.get(HEADER_TIMEOUT_VARIABLE, "")
    try:
        seconds = float(given) if given else DEFAULT_HEADER_TIMEOUT
    except ValueError:
        raise SystemExit(f"{HEADER_TIMEOUT_VARIABLE} must be a number of seconds, not {given!r}") from None
    if not 0 < seconds <= 3600:
        raise SystemExit(f"{HEADER_TIMEOUT_VARIABLE} must be between 0 and 3600 seconds, not {given!r}")
    return seconds


def guarded_protocol(seconds: float) -> type[asyncio.Protocol]:
    """Uvicorn's h11 protocol with a request timeout: a connection that has not sent a whole request
    ``seconds`` after it opened (or after its previous response ended) is closed. Uvicorn times out only
    an idle keep-alive connection, and only after a first response: a client that sends half a request
    line and stalls (slowloris) would otherwise hold its socket for ever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        request_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                self._disarm()  # the whole request is in: the response may take as long as it takes

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection gets the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.request_deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self.request_deadline is not None:
                self.request_deadline.cancel()
                self.request_deadline = None

        def _expired(self) -> None:
            self.request_deadline = None
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.logger.info("closing a connection that sent no whole request in %s s", seconds)
                self.transport.close()

    return GuardedH11Protocol


def run_http(app: Any, settings: Settings, *, host: str, port: int, **options: Any) -> None:
    """Serve ``app`` with uvicorn: logs on stderr (uvicorn's default config prints access logs on stdout),
    and every connection held to a whole request within the header timeout."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,
        http=guarded_protocol(header_timeout()),
        **options,
    )
