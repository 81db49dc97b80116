"""The dashboard's web app: static files shipped in the package, and a read-only JSON API.

Every response is a read: the database is opened read-only (SQLite ``mode=ro``, PostgreSQL read-only
transactions) and there is no route that writes. On a non-loopback host every request needs
``PIPELINE_STATE_AUTH_TOKEN``: as a bearer token, or as the session cookie the sign-in page sets (a value
derived from the token, never the token itself), checked as MCP over HTTP checks it
(mcp_server/transport/auth.py). On loopback, requests must name a loopback host (no DNS
rebinding from a web page). Every response carries a strict Content-Security-Policy and frame headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mcp_server.db.engine import Database
from mcp_server.errors import DomainError
from mcp_server.services import dashboard
from mcp_server.services.kept import Kept
from mcp_server.transport.auth import RequireToken, StaticTokenVerifier, TokenBackend
from mcp_server.ui.feed import ChangeFeed

STATIC = Path(__file__).parent / "static"
COOKIE = "pipeline_state_session"
OLD_COOKIE = "pipeline_state_token"  # held the raw token before: expired at sign-in
LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · pipeline-state</title>
<link rel="stylesheet" href="/static/app.css"></head><body class="login"><form method="post" action="/login">
<h1>pipeline-state</h1><p>This dashboard needs the server's token (PIPELINE_STATE_AUTH_TOKEN).</p>
<input type="password" name="token" placeholder="token" autofocus required>
<button type="submit">Sign in</button>{error}</form></body></html>"""
# Sent with every response: the pages load only their own script and stylesheet (no inline script or
# style), never inside a frame, never naming the page they came from.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
LOGIN_ATTEMPTS = 5  # sign-in attempts per client address ...
LOGIN_WINDOW = 60.0  # ... in this many seconds; more answer 429
# Open without signing in: the sign-in page and its stylesheet. Everything else carries the token as a
# bearer token, or the session cookie the sign-in page sets (the token itself as a cookie is refused).
OPEN_PATHS = ("/login", "/static/app.css")
KEPT_VIEWS = 16  # encoded views kept, with the change tokens they were built from

Reader = Callable[[AsyncSession], Awaitable[BaseModel]]
Basis = Callable[[AsyncSession], Awaitable[Hashable | None]]


def _encode(view: BaseModel) -> bytes:
    """A view (mcp_server/schemas/dashboard.py) as compact JSON, non-ASCII escaped."""
    return json.dumps(view.model_dump(mode="json"), separators=(",", ":")).encode()


def _matches(request: Request, tag: str) -> bool:
    """If-None-Match names this tag (in a list, or weak)."""
    given = request.headers.get("if-none-match", "")
    return any(part.strip().removeprefix("W/") == tag for part in given.split(","))


def session_value(key: bytes, token: str) -> str:
    """The cookie of a signed-in browser: an HMAC of the token under this process's random key. It opens
    the dashboard (reads) of this process only; it is not the token, which is the MCP write credential."""
    return hmac.new(key, b"dashboard-session\0" + token.encode(), hashlib.sha256).hexdigest()


class Views:
    """Builds the read-only JSON views. A view with change tokens (``basis``) gets its ETag from them,
    read before anything is built: an unchanged view answers 304 without being built, and an unchanged
    view asked for without a tag is served from the copy kept with its tokens. ``on_build`` (a hook)
    is called with each view's path when it is built."""

    def __init__(self, database: Database, on_build: Callable[[str], None] | None) -> None:
        self.database = database
        self.on_build = on_build
        self.salt = secrets.token_bytes(16)  # a restarted server may build views differently
        self.kept: Kept[str, bytes] = Kept(KEPT_VIEWS)
        self.building = anyio.Lock()  # one view built at a time: a burst of tabs does not multiply work

    def tag_of(self, key: str, basis: Hashable) -> str:
        digest = hashlib.sha256(self.salt + key.encode() + b"\0" + repr(basis).encode()).hexdigest()
        return '"t' + digest[:32] + '"'

    async def read(self, request: Request, reader: Reader, *, key: str, basis: Basis | None = None) -> Response:
        tag: str | None = None
        try:
            async with self.database.unit_of_work(write=False) as session:
                found = None if basis is None else await basis(session)
                if found is not None:
                    tag = self.tag_of(key, found)
                    if _matches(request, tag):
                        return Response(status_code=304, headers={"etag": tag})
                body = await self._body(session, reader, key, found)
        except DomainError as exc:
            status = 404 if exc.code == "not_found" else 400
            return JSONResponse({"error": exc.code, "detail": exc.message}, status_code=status)
        tag = tag or '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if _matches(request, tag):
            return Response(status_code=304, headers={"etag": tag})
        return Response(body, media_type="application/json", headers={"etag": tag, "cache-control": "no-cache"})

    async def _body(self, session: AsyncSession, reader: Reader, key: str, basis: Hashable | None) -> bytes:
        """The view encoded: the copy kept on this basis, else built now (a request that waited for a
        builder takes the copy another one built meanwhile)."""
        kept = self.kept.get(key, basis)
        if kept is not None:
            return kept[0]
        async with self.building:
            kept = self.kept.get(key, basis)
            if kept is not None:
                return kept[0]
            if self.on_build is not None:
                self.on_build(key.partition("?")[0])
            document = await reader(session)
            body = await anyio.to_thread.run_sync(_encode, document)
            self.kept.put(key, basis, body)
            return body


class LoginLimit:
    """At most LOGIN_ATTEMPTS sign-in attempts per client address in LOGIN_WINDOW seconds, right or
    wrong (a right token past the limit would tell a guesser it was right). Remembers at most ``clients``
    addresses (the least recently seen go first)."""

    def __init__(self, attempts: int = LOGIN_ATTEMPTS, window: float = LOGIN_WINDOW, clients: int = 10_000) -> None:
        self.attempts, self.window, self.clients = attempts, window, clients
        self.seen: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, client: str) -> int:
        """0 when this attempt may go on (and it is counted), else the seconds to wait."""
        now = time.monotonic()
        times = self.seen.pop(client, None) or deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        self.seen[client] = times
        while len(self.seen) > self.clients:
            self.seen.popitem(last=False)
        if len(times) >= self.attempts:
            return max(1, int(times[0] + self.window - now + 1))
        times.append(now)
        return 0


def build_app(
    database: Database,
    *,
    token: str | None,
    allowed_hosts: list[str] | None,
    on_build: Callable[[str], None] | None = None,
) -> Starlette:
    """The dashboard. ``on_build``: a hook called with a view's path each time one is built (not when an
    unchanged one answers 304 or is served from what was kept)."""
    views = Views(database, on_build)
    session = session_value(secrets.token_bytes(32), token) if token else ""
    verifier = StaticTokenVerifier(token) if token else None

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def projects(request: Request) -> Response:
        page = _page(request)
        return await views.read(request, lambda s: dashboard.projects(s, page=page), key=f"/api/projects?page={page}")

    feed = ChangeFeed(database.engine.url.render_as_string(hide_password=False))

    async def events(_: Request) -> Response:
        if feed.full():
            return Response("too many open pages: poll instead", status_code=503, headers={"retry-after": "30"})
        headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
        return StreamingResponse(feed.events(), media_type="text/event-stream", headers=headers)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            async with anyio.create_task_group() as background:
                background.start_soon(feed.run)  # idle until a page listens
                yield
                background.cancel_scope.cancel()
        finally:
            await database.dispose()

    middleware = [Middleware(SecurityHeaders)]
    if allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    if verifier is not None:
        middleware += _token_gate(verifier, session)
    routes = [
        Route("/", index),
        Route("/login", _login(verifier, session, LoginLimit()), methods=["GET", "POST"]),
        Route("/api/projects", projects),
        Route("/api/events", events),
        Route("/api/projects/{project_id}", _about_project(views, dashboard.project, dashboard.project_basis)),
        Route("/api/projects/{project_id}/executions", _about_project(views, dashboard.timeline)),
        Route("/api/projects/{project_id}/cost", _about_project(views, lambda s, p, page: dashboard.cost(s, p))),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)


def _about_project(
    views: Views,
    reader: Callable[..., Awaitable[BaseModel]],
    basis: Callable[[AsyncSession, uuid.UUID], Awaitable[Hashable | None]] | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """A route about one project (``reader(session, project_id, page=n)``): 404 unless the path names a
    project id. With ``basis``, the view's change tokens (see Views)."""

    async def route(request: Request) -> Response:
        try:
            found = uuid.UUID(request.path_params["project_id"])
        except ValueError:
            return JSONResponse({"error": "not_found", "detail": "not a project id"}, status_code=404)
        page = _page(request)
        tokens = None if basis is None else (lambda s: basis(s, found))
        return await views.read(
            request, lambda s: reader(s, found, page=page), key=f"{request.url.path}?page={page}", basis=tokens
        )

    return route


def _login(
    verifier: StaticTokenVerifier | None, session: str, limit: LoginLimit
) -> Callable[[Request], Awaitable[Response]]:
    """The sign-in page; a right token gets the session cookie (HttpOnly, SameSite=Strict, Path=/)."""

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(LOGIN_PAGE.format(error=""))
        wait = limit.wait(request.client.host if request.client else "")
        if wait:
            page = LOGIN_PAGE.format(error='<p class="error">Too many attempts: wait a minute.</p>')
            return HTMLResponse(page, status_code=429, headers={"retry-after": str(wait)})
        given = str((await request.form()).get("token", ""))
        if verifier is not None and verifier.matches(given):
            response = RedirectResponse("/", status_code=303)
            secure = request.url.scheme == "https"
            response.set_cookie(COOKIE, session, path="/", httponly=True, samesite="strict", secure=secure)
            response.delete_cookie(OLD_COOKIE, path="/", httponly=True, samesite="strict", secure=secure)
            return response
        return HTMLResponse(LOGIN_PAGE.format(error='<p class="error">Wrong token.</p>'), status_code=401)

    return login


def _page(request: Request) -> int:
    try:
        return max(1, min(int(request.query_params.get("page", "1")), 1_000_000))
    except ValueError:
        return 1


class SecurityHeaders:
    """Pure ASGI: SECURITY_HEADERS on every HTTP response (refusals and redirects too)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


def _token_gate(verifier: StaticTokenVerifier, session: str) -> list[Middleware]:
    """The same check as MCP over HTTP (mcp_server/transport/auth.py), taking the session cookie too; a
    request that is not signed in gets ``_refusal``, but for OPEN_PATHS."""
    backend = TokenBackend(verifier, cookie=COOKIE, session=session)
    return [
        Middleware(AuthenticationMiddleware, backend=backend),
        Middleware(RequireToken, refuse=_refusal, open_paths=OPEN_PATHS),
    ]


def _refusal(request: HTTPConnection) -> Response:
    """What a request that is not signed in gets: the API answers 401; a page, a redirect to sign in."""
    if request.scope["path"].startswith("/api/"):
        return JSONResponse({"error": "unauthorized", "detail": "sign in at /login"}, 401)
    return RedirectResponse("/login", status_code=303)
