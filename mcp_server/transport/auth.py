"""The one check of ``PIPELINE_STATE_AUTH_TOKEN``, shared by MCP over HTTP and the dashboard.

It is the standard pair: Starlette's ``AuthenticationMiddleware`` with :class:`TokenBackend` puts who is
calling on every request (``request.user``), and :class:`RequireToken` refuses a caller who is not
authenticated. The bearer token goes through the MCP SDK's public ``BearerAuthBackend`` and a
``TokenVerifier`` (:class:`StaticTokenVerifier`, a constant-time comparison), so the SDK's streamable
HTTP transport sees the same principal on every request and binds its sessions to it. The dashboard
also takes its session cookie (a value derived from the token, never the token). What a refusal looks
like is each app's own: ``bearer_refusal`` (401 JSON with ``WWW-Authenticate``) for MCP, a sign-in page
for the dashboard (mcp_server/ui/web.py).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection

from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend
from mcp.server.auth.provider import AccessToken
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

CLIENT_ID = "pipeline-state-token"  # the one principal the token stands for
SESSION_USER = "pipeline-state-dashboard"  # a browser signed in with the session cookie

Refusal = Callable[[HTTPConnection], Response]


def same_secret(given: str, expected: bytes) -> bool:
    """``given`` is ``expected``, compared in constant time (never ``==`` on a secret). A lone surrogate
    (a form field may carry one) encodes to bytes no valid secret has, instead of raising."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected)


class StaticTokenVerifier:
    """The MCP SDK's ``TokenVerifier`` for one shared token: ``Authorization: Bearer <token>`` is this
    server's token, or nothing. Surrounding blanks are ignored, as in a header written by hand."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if not same_secret(token.strip(), self._token):
            return None
        return AccessToken(token=token.strip(), client_id=CLIENT_ID, scopes=[])

    def matches(self, given: str) -> bool:
        """The sign-in form's check: the same comparison as a bearer token's."""
        return same_secret(given, self._token)


class TokenBackend(AuthenticationBackend):
    """Authenticates a request by the bearer token (the SDK's backend with :class:`StaticTokenVerifier`),
    or, with ``cookie`` and ``session`` given, by that cookie holding the session value. Anything else is
    anonymous; :class:`RequireToken` decides what an anonymous request gets."""

    def __init__(self, verifier: StaticTokenVerifier, *, cookie: str = "", session: str = "") -> None:
        self.bearer = BearerAuthBackend(verifier)
        self.cookie = cookie
        self.session = session.encode()

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        found = await self.bearer.authenticate(conn)  # the SDK leaves its result unannotated
        if found is not None:
            credentials: AuthCredentials
            user: BaseUser
            credentials, user = found
            return credentials, user
        given = conn.cookies.get(self.cookie, "") if self.cookie and self.session else ""
        if given and same_secret(given, self.session):
            return AuthCredentials(), SimpleUser(SESSION_USER)
        return None


def bearer_refusal(_: HTTPConnection) -> Response:
    """MCP over HTTP: 401 naming the header to send; the token is never echoed."""
    return JSONResponse(
        {"error": "unauthorized", "detail": "send Authorization: Bearer <token>"},
        status_code=401,
        headers={"www-authenticate": 'Bearer realm="pipeline-state"'},
    )


class RequireToken:
    """Pure ASGI, inside ``AuthenticationMiddleware``: an HTTP request that is not authenticated gets
    ``refuse``'s response, unless its path is one of ``open_paths``. Neither app has a WebSocket route."""

    def __init__(self, app: ASGIApp, refuse: Refusal = bearer_refusal, open_paths: Collection[str] = ()) -> None:
        self.app = app
        self.refuse = refuse
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        if conn.user.is_authenticated:
            await self.app(scope, receive, send)
            return
        await self.refuse(conn)(scope, receive, send)


def require_token(app: ASGIApp, token: str) -> ASGIApp:
    """``app`` (MCP over HTTP) answering only requests with ``Authorization: Bearer <token>``."""
    return AuthenticationMiddleware(RequireToken(app), backend=TokenBackend(StaticTokenVerifier(token)))
