"""The dashboard's web app: static files shipped in the package, and a read-only JSON API.

Every response is a read: the database is opened read-only (SQLite ``mode=ro``, PostgreSQL read-only
transactions) and there is no route that writes. On a non-loopback host every request needs
``PIPELINE_STATE_AUTH_TOKEN``: as a bearer token, or as the cookie the sign-in page sets. On loopback,
requests must name a loopback host (no DNS rebinding from a web page).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mcp_server.db.engine import Database
from mcp_server.errors import DomainError
from mcp_server.ui import data

STATIC = Path(__file__).parent / "static"
COOKIE = "pipeline_state_token"
LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in · pipeline-state</title>
<link rel="stylesheet" href="/static/app.css"></head><body class="login"><form method="post" action="/login">
<h1>pipeline-state</h1><p>This dashboard needs the server's token (PIPELINE_STATE_AUTH_TOKEN).</p>
<input type="password" name="token" placeholder="token" autofocus required>
<button type="submit">Sign in</button>{error}</form></body></html>"""

Reader = Callable[[AsyncSession], Awaitable[dict[str, Any]]]


def _plain(value: Any) -> Any:
    """The few non-JSON values a view may hold; anything else is a bug in the view, not a string."""
    if isinstance(value, Decimal):
        return format(value, "f")  # "0.0000001", never "1E-7"
    if isinstance(value, uuid.UUID | date):
        return value.isoformat() if isinstance(value, date) else str(value)
    raise TypeError(f"a dashboard view holds a {type(value).__name__}, which is not JSON")


def build_app(database: Database, *, token: str | None, allowed_hosts: list[str] | None) -> Starlette:
    async def read(request: Request, reader: Reader) -> Response:
        try:
            async with database.unit_of_work(write=False) as session:
                body = json.dumps(await reader(session), separators=(",", ":"), default=_plain).encode()
        except DomainError as exc:
            status = 404 if exc.code == "not_found" else 400
            return JSONResponse({"error": exc.code, "detail": exc.message}, status_code=status)
        tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers={"etag": tag})
        return Response(body, media_type="application/json", headers={"etag": tag, "cache-control": "no-cache"})

    def about_project(reader: Callable[[AsyncSession, uuid.UUID, int], Awaitable[dict[str, Any]]]) -> Any:
        """A route about one project: 404 unless the path names a project id."""

        async def route(request: Request) -> Response:
            try:
                found = uuid.UUID(request.path_params["project_id"])
            except ValueError:
                return JSONResponse({"error": "not_found", "detail": "not a project id"}, status_code=404)
            page = _page(request)
            return await read(request, lambda session: reader(session, found, page))

        return route

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def projects(request: Request) -> Response:
        page = _page(request)
        return await read(request, lambda session: data.projects(session, page=page))

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(LOGIN_PAGE.format(error=""))
        form = await request.form()
        given = str(form.get("token", ""))
        if token and hmac.compare_digest(given.encode(), token.encode()):
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
            return response
        return HTMLResponse(LOGIN_PAGE.format(error='<p class="error">Wrong token.</p>'), status_code=401)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await database.dispose()

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    if token:
        middleware.append(Middleware(TokenGate, token=token))
    return Starlette(
        routes=[
            Route("/", index),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/api/projects", projects),
            Route("/api/projects/{project_id}", about_project(lambda s, p, _: data.project(s, p))),
            Route("/api/projects/{project_id}/executions", about_project(lambda s, p, n: data.timeline(s, p, page=n))),
            Route("/api/projects/{project_id}/cost", about_project(lambda s, p, _: data.cost(s, p))),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )


def _page(request: Request) -> int:
    try:
        return max(1, min(int(request.query_params.get("page", "1")), 1_000_000))
    except ValueError:
        return 1


class TokenGate:
    """Every request but the sign-in page and its stylesheet carries the token: as a bearer token or as the
    cookie the sign-in page sets. The API answers 401; a page, a redirect to the sign-in page."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in ("/login", "/static/app.css") or self._signed_in(scope):
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith("/api/"):
            response: Response = JSONResponse({"error": "unauthorized", "detail": "sign in at /login"}, 401)
        else:
            response = RedirectResponse("/login", status_code=303)
        await response(scope, receive, send)

    def _signed_in(self, scope: dict[str, Any]) -> bool:
        request = Request(scope)
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(), self.token):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.token)
