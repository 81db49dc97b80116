"""One check of PIPELINE_STATE_AUTH_TOKEN (mcp_server/transport/auth.py) for MCP over HTTP and the
dashboard: the bearer token and the dashboard's session cookie, each compared in constant time, with
each app's own refusal. In process, on a small app; tests/test_http.py and tests/test_ui.py run the
real servers."""

from __future__ import annotations

import ast
from pathlib import Path

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import mcp_server
from mcp_server.db.engine import Database
from mcp_server.transport.auth import (
    CLIENT_ID,
    RequireToken,
    StaticTokenVerifier,
    TokenBackend,
    require_token,
)
from mcp_server.ui.web import COOKIE, build_app

pytestmark = pytest.mark.anyio

TOKEN = "transport-auth-token-7f3e"
SESSION = "a-session-value-derived-elsewhere"


async def _whoami(request: Request) -> Response:
    return PlainTextResponse(request.user.display_name)


def _inner() -> Starlette:
    return Starlette(routes=[Route("/", _whoami), Route("/open", _whoami)])


async def _get(app: object, path: str = "/", **headers: str) -> httpx2.Response:
    transport = httpx2.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        return await http.get(path, headers=headers)


async def test_mcp_over_http_takes_only_the_bearer_token() -> None:
    app = require_token(_inner(), TOKEN)
    served = await _get(app, Authorization=f"Bearer {TOKEN}")
    assert served.status_code == 200 and served.text == CLIENT_ID
    assert (await _get(app, Authorization=f"bearer  {TOKEN} ")).status_code == 200  # as before: case, blanks
    refused = {
        "no header": {},
        "wrong token": {"Authorization": "Bearer nope"},
        "token prefix": {"Authorization": f"Bearer {TOKEN[:-1]}"},
        "other scheme": {"Authorization": f"Basic {TOKEN}"},
        "bare token": {"Authorization": TOKEN},
        "the token as the dashboard's cookie": {"Cookie": f"{COOKIE}={TOKEN}"},
    }
    for case, headers in refused.items():
        answer = await _get(app, **headers)
        assert answer.status_code == 401, case
        assert answer.headers["www-authenticate"] == 'Bearer realm="pipeline-state"', case
        assert answer.json() == {"error": "unauthorized", "detail": "send Authorization: Bearer <token>"}, case
        assert TOKEN not in answer.text


async def test_the_dashboards_gate_takes_the_token_or_the_session_cookie_and_refuses_its_own_way() -> None:
    def refuse(_: HTTPConnection) -> Response:
        return PlainTextResponse("sign in", status_code=303, headers={"location": "/login"})

    backend = TokenBackend(StaticTokenVerifier(TOKEN), cookie=COOKIE, session=SESSION)
    middleware = [
        Middleware(AuthenticationMiddleware, backend=backend),
        Middleware(RequireToken, refuse=refuse, open_paths=["/open"]),
    ]
    app = Starlette(routes=[Route("/", _whoami), Route("/open", _whoami)], middleware=middleware)
    assert (await _get(app, Authorization=f"Bearer {TOKEN}")).status_code == 200
    assert (await _get(app, Cookie=f"{COOKIE}={SESSION}")).status_code == 200
    assert (await _get(app, "/open")).status_code == 200
    for headers in ({}, {"Cookie": f"{COOKIE}={TOKEN}"}, {"Authorization": f"Bearer {SESSION}"}):
        assert (await _get(app, **headers)).status_code == 303, headers


async def test_the_sign_in_form_uses_the_same_comparison() -> None:
    verifier = StaticTokenVerifier(TOKEN)
    assert verifier.matches(TOKEN) and not verifier.matches(TOKEN + "x") and not verifier.matches("\ud800")
    assert (await verifier.verify_token(TOKEN)) is not None and (await verifier.verify_token("")) is None


async def test_the_dashboard_is_guarded_by_the_shared_backend(tmp_path: Path) -> None:
    database = Database.connect(f"sqlite:///{tmp_path / 'state.db'}", read_only=True)
    try:
        app = build_app(database, token=TOKEN, allowed_hosts=None)
        backends = [m.kwargs.get("backend") for m in app.user_middleware if m.cls is AuthenticationMiddleware]
        assert len(backends) == 1 and isinstance(backends[0], TokenBackend)
        assert any(m.cls is RequireToken for m in app.user_middleware)
    finally:
        await database.dispose()


def test_the_token_is_compared_in_one_place_only() -> None:
    """No module that serves HTTP or runs a command but mcp_server/transport/auth.py compares a secret
    (hmac.compare_digest; the lease tokens of mcp_server/services are another matter)."""
    package = Path(mcp_server.__file__).parent
    comparing = set()
    for path in [p for folder in ("transport", "ui", "cli") for p in (package / folder).rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "compare_digest":
                comparing.add(path.relative_to(package.parent).as_posix())
    assert comparing == {"mcp_server/transport/auth.py"}
