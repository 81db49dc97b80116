"""The dashboard (issue 15) in a real browser: `pipeline-state-mcp ui` serves a database that a real MCP
client filled (a diamond pipeline with a stale branch, a running step and costs); headless Chromium
(Debian's package, driven by Playwright) loads its pages, and the rendered DOM must show every step
with its state, the stale step's cause, and cost totals equal to get_cost_summary's. The page updates by
itself while an agent records. Without Chromium these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mcp_server.db.engine import Database
from mcp_server.db.migrate import upgrade_to_head
from mcp_server.server import build_server
from mcp_server.settings import Settings
from tests.conftest import IN_CI
from tests.helpers import call_ok

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "img"
DIAMOND = [
    {"process_id": "research", "name": "Research"},
    {"process_id": "outline", "name": "Outline", "depends_on": ["research"]},
    {"process_id": "examples", "name": "Examples", "depends_on": ["research"]},
    {"process_id": "draft", "name": "Draft", "depends_on": ["outline", "examples"]},
]
MODELS = [("openai", "gpt-4o-mini"), ("anthropic", "claude-3-5-haiku-latest"), ("openai", "gpt-4o")]


def _usage(n: int) -> dict[str, Any]:
    provider, model = MODELS[n % len(MODELS)]
    return {"provider": provider, "model": model, "prompt_tokens": 2000 + 100 * n, "completion_tokens": 400 + 10 * n}


async def _fill(url: str) -> dict[str, Any]:
    """What an agent leaves behind: a diamond recorded once, `outline` redone (so `draft` is stale, caused by
    it), `examples` started again and still running; every step logged its usage."""
    async with Client(build_server(Settings(database_url=url))) as client:
        await call_ok(client, "apply_pipeline", processes=DIAMOND)
        project = (await call_ok(client, "create_project", name="Launch post", budget_usd="0.5"))["id"]
        for n, step in enumerate(["research", "outline", "examples", "draft"]):
            await call_ok(
                client, "record_execution", project_id=project, process_id=step, output_data={"v": n}, usage=_usage(n)
            )
        await call_ok(
            client,
            "record_execution",
            project_id=project,
            process_id="outline",
            output_data={"v": "shorter outline"},
            usage=_usage(4),
        )
        await call_ok(client, "start_execution", project_id=project, process_id="examples")
        status = await call_ok(client, "get_pipeline_status", project_id=project)
        summary = await call_ok(client, "get_cost_summary", project_id=project)
    return {"project": project, "status": status, "summary": summary}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _start_ui(
    url: str, *extra: str, token: str | None = None, host: str = "127.0.0.1", env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "PIPELINE_STATE_DATABASE_URL": url, **(env_extra or {})}
    env.pop("PIPELINE_STATE_AUTH_TOKEN", None)
    if token:
        env["PIPELINE_STATE_AUTH_TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_server", "ui", "--host", host, "--port", str(port), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            _get(base + "/static/app.css")
            return process, base
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"ui exited: {process.stderr.read().decode() if process.stderr else ''}") from None
            time.sleep(0.1)
    _stop(process)
    raise AssertionError("ui did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    finally:
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    anyio.run(upgrade_to_head, url)
    facts = anyio.run(_fill, url)
    process, base = _start_ui(url)
    try:
        yield {**facts, "url": url, "base": base}
    finally:
        _stop(process)


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail("Chromium is required in CI (Debian package chromium; .ci/run installs it)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _shoot(page: Any, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    if os.environ.get("UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / name, SCREENSHOTS / name)


def test_the_pages_show_states_causes_and_costs(filled: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 260})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(filled["base"] + "/")
    row = page.locator(f"tr[data-project='{filled['project']}']")
    row.wait_for()
    assert "Launch post" in row.inner_text()
    counts = filled["status"]["counts"]
    for state, count in counts.items():
        chip = row.locator(f".chip.{state}")
        assert (chip.count() and int(chip.inner_text())) == count or (count == 0 and chip.count() == 0), state
    _shoot(page, tmp_path, "dashboard-projects.png")

    page.set_viewport_size({"width": 1280, "height": 900})
    row.locator("a").click()
    page.locator("#steps tr[data-step]").first.wait_for()
    expected = {step["process_id"]: step["state"] for step in filled["status"]["processes"]}
    shown = {
        row.get_attribute("data-step"): row.get_attribute("data-state")
        for row in page.locator("#steps tr[data-step]").all()
    }
    assert (
        shown == expected == {"research": "completed", "outline": "completed", "examples": "running", "draft": "stale"}
    )
    assert "outline" in page.locator("tr[data-step='draft'] .stale-cause").inner_text()
    assert page.locator("#graph [data-node]").count() == 4 and page.locator("#graph [data-edge]").count() == 4
    assert "stale ← outline" in (page.locator("#graph [data-node='draft']").text_content() or "")

    totals = filled["summary"]["totals"]
    assert Decimal(page.locator("[data-total-cost]").get_attribute("data-total-cost")) == Decimal(totals["cost_usd"])
    assert Decimal(page.locator("[data-rework-cost]").get_attribute("data-rework-cost")) == Decimal(
        totals["superseded_cost_usd"]
    )
    bars = page.locator("#by-model [data-model]").all()
    assert sum(Decimal(bar.get_attribute("data-cost") or "0") for bar in bars) == Decimal(totals["cost_usd"])
    agents = page.locator("#by-agent [data-agent]").all()  # cost by agent sums to the same total
    assert agents and sum(Decimal(a.get_attribute("data-cost") or "0") for a in agents) == Decimal(totals["cost_usd"])
    assert page.locator("#alerts li").count() >= 1
    assert page.locator("#timeline tr[data-execution]").count() == 6
    _shoot(page, tmp_path, "dashboard-project.png")
    # The project view's budget is the status tool's, figure for figure.
    view = json.loads(_get(f"{filled['base']}/api/projects/{filled['project']}")[1])
    assert view["budget"] == filled["status"]["cost"] and view["budget"]["budget_usd"] == "0.5"
    assert requested and all(url.startswith(filled["base"] + "/") for url in requested), requested


def test_the_page_follows_an_agent_without_a_reload(filled: dict[str, Any], browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{filled['base']}/#/project/{filled['project']}")
    page.locator("tr[data-step='draft'][data-state='stale']").wait_for()
    page.evaluate("window.__loadedOnce = true")
    page.wait_for_function("feed !== null && feed.readyState === EventSource.OPEN", timeout=10_000)

    async def redo_draft() -> None:
        async with Client(build_server(Settings(database_url=filled["url"], auto_migrate=False))) as client:
            await call_ok(
                client,
                "record_execution",
                project_id=filled["project"],
                process_id="draft",
                output_data={"v": "new"},
                force=True,
            )

    # Playwright's sync API runs an event loop on this thread: the agent's client runs on another one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, redo_draft).result(timeout=30)
    page.locator("tr[data-step='draft'][data-state='completed']").wait_for(timeout=10_000)
    assert page.evaluate("window.__loadedOnce === true"), "the page was reloaded"
    assert page.locator("#timeline tr[data-execution]").count() == 7


def test_the_change_feed_tells_an_open_page_of_a_commit_by_another_process(filled: dict[str, Any]) -> None:
    """/api/events (server-sent events): a `change` event follows a commit made by another process, and the
    stream stays within the dashboard's bound of listeners."""
    host, port = urllib.parse.urlsplit(filled["base"]).netloc.split(":")
    stream = http.client.HTTPConnection(host, int(port), timeout=20)
    stream.request("GET", "/api/events")
    response = stream.getresponse()
    assert response.status == 200 and response.getheader("content-type", "").startswith("text/event-stream")
    assert response.readline().startswith(b"retry:")

    async def write() -> None:
        async with Client(build_server(Settings(database_url=filled["url"], auto_migrate=False))) as client:
            await call_ok(client, "create_project", name="seen by the feed")

    def heard() -> bytes:
        while line := response.readline():
            if line.startswith(b"event: change"):
                return line
        return b""

    with ThreadPoolExecutor(1) as pool:
        listening = pool.submit(heard)
        for _ in range(10):  # the watcher opens its change source once a page listens: write until heard
            anyio.run(write)
            try:
                assert listening.result(timeout=2) == b"event: change\n"
                break
            except TimeoutError:
                continue
        else:
            raise AssertionError("no change event after ten commits")
    stream.close()


async def test_the_dashboard_database_cannot_be_written(db_url: str) -> None:
    """`ui` opens the database read-only: SQLite with mode=ro, PostgreSQL with read-only transactions."""
    reader = Database.connect(db_url, read_only=True)
    try:
        async with reader.unit_of_work(write=False) as session:
            assert (await session.execute(text("SELECT count(*) FROM projects"))).scalar() == 0
        with pytest.raises(DBAPIError, match="(?i)read-?only"):
            async with reader.unit_of_work(write=False) as session:
                await session.execute(text("UPDATE revisions SET token = token"))
    finally:
        await reader.dispose()


test_the_dashboard_database_cannot_be_written = pytest.mark.anyio(test_the_dashboard_database_cannot_be_written)


def test_a_token_guards_the_dashboard(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    anyio.run(upgrade_to_head, url)
    refused = subprocess.run(
        [sys.executable, "-m", "mcp_server", "ui", "--host", "0.0.0.0", "--port", str(_free_port())],
        env={k: v for k, v in os.environ.items() if k != "PIPELINE_STATE_AUTH_TOKEN"}
        | {"PIPELINE_STATE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "PIPELINE_STATE_AUTH_TOKEN" in refused.stderr

    process, base = _start_ui(url, token="s3cret-token")
    try:
        assert _get(base + "/api/projects")[0] == 401
        assert _get(base + "/api/projects", Authorization="Bearer s3cret-token")[0] == 200
        status, _ = _get(base + "/")
        assert status == 200  # redirected to the sign-in page
        form = urllib.parse.urlencode({"token": "wrong"}).encode()
        try:
            urllib.request.urlopen(urllib.request.Request(base + "/login", data=form), timeout=10)
            raise AssertionError("a wrong token signed in")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        form = urllib.parse.urlencode({"token": "s3cret-token"}).encode()
        try:
            opener.open(urllib.request.Request(base + "/login", data=form), timeout=10)
            raise AssertionError("no redirect after signing in")
        except urllib.error.HTTPError as exc:
            assert exc.code == 303
            set_cookie = exc.headers["set-cookie"]
        assert "httponly" in set_cookie.lower()
        cookie = set_cookie.split(";")[0]
        assert _get(base + "/api/projects", Cookie=cookie)[0] == 200
    finally:
        _stop(process)


MERMAID = "mermaid@11.12.1"  # the renderer GitHub, VS Code and most MCP clients embed


@pytest.fixture(scope="session")
def mermaid_js(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mermaid.min.js from the npm registry (npm pack: no install, no scripts run)."""
    folder = tmp_path_factory.mktemp("mermaid")
    npm = shutil.which("npm")
    try:
        if npm is None:
            raise FileNotFoundError("npm")
        subprocess.run([npm, "pack", MERMAID, "--silent"], cwd=folder, check=True, capture_output=True, timeout=180)
        (tarball,) = folder.glob("mermaid-*.tgz")
        subprocess.run(["tar", "xzf", tarball.name, "package/dist/mermaid.min.js"], cwd=folder, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        if IN_CI:
            pytest.fail(f"could not fetch {MERMAID} with npm: {exc!r}")
        pytest.skip(f"could not fetch {MERMAID} with npm: {exc!r}")
    return folder / "package" / "dist" / "mermaid.min.js"


def test_mermaid_itself_renders_the_graph_resource(filled: dict[str, Any], browser: Any, mermaid_js: Path) -> None:
    """The Mermaid resource is checked by Mermaid: its own parser and renderer, in Chromium, draw one node
    per step with its state's class, and the stale step's cause."""

    async def graph() -> str:
        async with Client(build_server(Settings(database_url=filled["url"], auto_migrate=False))) as client:
            found = await client.read_resource(f"pipeline://projects/{filled['project']}/graph")
            return str(found.contents[0].text)  # type: ignore[union-attr]

    with ThreadPoolExecutor(1) as pool:
        source = pool.submit(anyio.run, graph).result(timeout=30)
    page = browser.new_page()
    page.set_content("<!doctype html><html><body><div id='out'></div></body></html>")
    page.add_script_tag(path=str(mermaid_js))
    rendered = page.evaluate(
        """async (source) => {
            mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
            await mermaid.parse(source);
            const { svg } = await mermaid.render("pipeline", source);
            document.getElementById("out").innerHTML = svg;
            return [...document.querySelectorAll("#out g.node")].map((n) => [n.getAttribute("class"), n.textContent]);
        }""",
        source,
    )
    states = {step["process_id"]: step["state"] for step in filled["status"]["processes"]}
    drawn = {next(step for step in states if text.startswith(step)): (cls.split(), text) for cls, text in rendered}
    assert set(drawn) == set(states), rendered  # one node per step (a node's text starts with its id)
    for step, state in states.items():
        assert state in drawn[step][0], (step, drawn[step])
    assert "cause: outline" in drawn["draft"][1]


# Hostile round: the session, the sign-in page, the headers, slow clients and large pipelines.
TOKEN = "s3cret-token-for-the-dashboard"
SECURITY = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _request(base: str, method: str, path: str, *, source: str = "127.0.0.1", **options: Any) -> Any:
    """One request over http.client (no redirects followed), from the given loopback source address."""
    port = int(base.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request(method, path, **options)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def _sign_in(base: str, token: str, *, source: str = "127.0.0.1") -> Any:
    body = urllib.parse.urlencode({"token": token})
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return _request(base, "POST", "/login", source=source, body=body, headers=headers)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[dict[str, Any]]:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    anyio.run(upgrade_to_head, url)
    process, base = _start_ui(url, token=TOKEN)
    try:
        yield {"url": url, "base": base}
    finally:
        _stop(process)


def test_the_session_cookie_is_derived_from_the_token_and_never_is_the_token(guarded: dict[str, Any]) -> None:
    base = guarded["base"]
    signed_in = _sign_in(base, TOKEN)
    assert signed_in.status == 303
    cookies = signed_in.msg.get_all("set-cookie")
    (session,) = [c for c in cookies if c.startswith("pipeline_state_session=")]
    name_value, *flags = [part.strip() for part in session.split(";")]
    value = name_value.partition("=")[2]
    assert value and TOKEN not in value and value != TOKEN
    assert {"HttpOnly", "SameSite=strict", "Path=/"} <= set(flags), flags
    assert any(c.startswith("pipeline_state_token=") and "Max-Age=0" in c for c in cookies)  # the old one, expired
    assert _request(base, "GET", "/api/projects", headers={"Cookie": name_value}).status == 200
    refused = {
        "the token as the session cookie": {"Cookie": f"pipeline_state_session={TOKEN}"},
        "the token as the old cookie": {"Cookie": f"pipeline_state_token={TOKEN}"},
        "the session value as a bearer token": {"Authorization": f"Bearer {value}"},
        "a session value one character off": {
            "Cookie": f"pipeline_state_session={value[:-1]}{'1' if value.endswith('0') else '0'}"
        },
    }
    for case, headers in refused.items():
        assert _request(base, "GET", "/api/projects", headers=headers).status == 401, case
    # The value is this process's: another server with the same token does not take it.
    process, other = _start_ui(guarded["url"], token=TOKEN)
    try:
        assert _request(other, "GET", "/api/projects", headers={"Cookie": name_value}).status == 401
        assert _request(other, "GET", "/api/projects", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    finally:
        _stop(process)


def test_sign_in_attempts_are_rate_limited_per_client_address(guarded: dict[str, Any]) -> None:
    base = guarded["base"]
    for n in range(5):
        assert _sign_in(base, f"guess-{n}").status == 401
    limited = _sign_in(base, TOKEN)  # even the right token: a guesser must not learn it was right
    assert limited.status == 429
    assert 1 <= int(limited.getheader("retry-after")) <= 61
    assert _request(base, "GET", "/login").status == 200  # the page itself still loads
    assert _sign_in(base, TOKEN, source="127.0.0.2").status == 303  # another address is not locked out


def test_every_response_carries_the_security_headers(guarded: dict[str, Any]) -> None:
    base = guarded["base"]
    signed_in = {"Authorization": f"Bearer {TOKEN}"}
    answers = {
        "page (redirect to sign in)": _request(base, "GET", "/"),
        "page": _request(base, "GET", "/", headers=signed_in),
        "sign-in page": _request(base, "GET", "/login"),
        "wrong token": _sign_in(base, "wrong"),
        "API refused": _request(base, "GET", "/api/projects"),
        "API": _request(base, "GET", "/api/projects", headers=signed_in),
        "script": _request(base, "GET", "/static/app.js", headers=signed_in),
        "missing": _request(base, "GET", "/api/projects/not-an-id", headers=signed_in),
    }
    for case, response in answers.items():
        for name, value in SECURITY.items():
            assert response.getheader(name) == value, (case, name)
        policy = response.getheader("content-security-policy") or ""
        directives = {d.strip().split()[0]: d.strip() for d in policy.split(";") if d.strip()}
        assert directives.get("default-src") == "default-src 'self'", (case, policy)
        assert directives.get("frame-ancestors") == "frame-ancestors 'none'", (case, policy)
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, (case, policy)
    assert answers["page (redirect to sign in)"].status == 303 and answers["script"].status == 200


def test_the_pages_draw_under_their_content_security_policy(filled: dict[str, Any], browser: Any) -> None:
    """No inline script or style is needed: the browser reports no violation, and the bars get their sizes."""
    page = browser.new_page()
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => "
        "(window.__violations = window.__violations || []).push(e.violatedDirective + ' ' + e.blockedURI))"
    )
    response = page.goto(filled["base"] + "/")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page.locator(f"tr[data-project='{filled['project']}'] .budget .spent").wait_for()
    spent = page.locator(".budget .spent").first.evaluate("(e) => e.getBoundingClientRect().width")
    assert spent > 0
    page.goto(f"{filled['base']}/#/project/{filled['project']}")
    page.locator("#by-model [data-model]").first.wait_for()
    filled_widths = page.locator("#by-model .fill").evaluate_all("(es) => es.map((e) => e.style.width)")
    assert filled_widths and all(width.endswith("%") for width in filled_widths)
    fill = page.locator("#graph [data-node='draft'] rect").evaluate("(e) => getComputedStyle(e).fill")
    assert fill == "rgb(249, 168, 37)"  # --stale, from the stylesheet
    assert page.evaluate("window.__violations || []") == []


def test_a_half_sent_request_is_cut_off_while_others_are_served(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    anyio.run(upgrade_to_head, url)
    process, base = _start_ui(url, env_extra={"PIPELINE_STATE_HTTP_HEADER_TIMEOUT": "1"})
    port = int(base.rsplit(":", 1)[1])
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        stalled[0].sendall(b"GET /static/app.css HT")  # half a request line
        stalled[2].sendall(b"HEAD /static/app.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # no body to read
        head = b""
        while b"\r\n\r\n" not in head:
            head += stalled[2].recv(65536)
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        stalled[2].sendall(b"GET /static/app.css HTTP/1.1\r\nHost: 12")  # half its second request
        for _ in range(3):  # others are served meanwhile
            assert _get(base + "/static/app.css")[0] == 200
            time.sleep(0.5)
        for connection in stalled:  # stalled[1] sent nothing at all
            assert connection.recv(65536) == b"", "the server answered a half-sent request"  # closed
    finally:
        for connection in stalled:
            connection.close()
        _stop(process)


async def _fill_wide(url: str, steps: int) -> str:
    async with Client(build_server(Settings(database_url=url))) as client:
        chain = [
            {"process_id": f"s{n:03d}", "name": f"Step {n}", **({"depends_on": [f"s{n - 1:03d}"]} if n else {})}
            for n in range(steps)
        ]
        await call_ok(client, "apply_pipeline", processes=chain)
        return str((await call_ok(client, "create_project", name="Long chain"))["id"])


def test_a_large_pipeline_is_shown_a_page_of_steps_at_a_time(tmp_path: Path, browser: Any) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API runs an event loop on this thread
        project = pool.submit(anyio.run, _fill_wide, url, 260).result(timeout=60)
    process, base = _start_ui(url)
    try:
        page = browser.new_page()
        page.goto(f"{base}/#/project/{project}")
        page.locator("#step-pages").wait_for()
        assert page.locator("#steps tr[data-step]").count() == 200
        assert "of 260" in page.locator("#step-pages").inner_text()
        page.locator("#step-pages a", has_text="next").click()
        page.locator("#steps tr[data-step='s259']").wait_for()
        assert page.locator("#steps tr[data-step]").count() == 60
        assert page.locator(".card b").first.inner_text() == "260"
    finally:
        _stop(process)


def test_a_browser_signs_in_under_the_policy_and_its_script_never_sees_the_session(
    guarded: dict[str, Any], browser: Any
) -> None:
    page = browser.new_page()
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => "
        "(window.__violations = window.__violations || []).push(e.violatedDirective + ' ' + e.blockedURI))"
    )
    page.goto(guarded["base"] + "/")
    assert page.url.endswith("/login")
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    page.locator("h1", has_text="Projects").wait_for()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "pipeline_state_session"]
    assert cookie["value"] != TOKEN and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    assert page.evaluate("window.__violations || []") == []


def test_the_page_marks_a_step_whose_checks_hold_its_dependants(tmp_path: Path, browser: Any) -> None:
    """A completed step whose required check is missing shows it (the steps table and the graph), and a
    check recorded by another process turns it to failed on the open page, without a reload (docs/design.md,
    "Checks")."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    steps = [
        {"process_id": "design", "name": "Design", "required_checks": ["review"]},
        {"process_id": "build", "name": "Build", "depends_on": ["design"]},
    ]

    async def fill() -> tuple[str, str]:
        async with Client(build_server(Settings(database_url=url, auto_migrate=False))) as client:
            await call_ok(client, "apply_pipeline", processes=steps)
            project = (await call_ok(client, "create_project", name="Checked"))["id"]
            recorded = await call_ok(
                client, "record_execution", project_id=project, process_id="design", output_data={"v": 1}
            )
        return project, recorded["execution"]["id"]

    async def fail_review(execution: str) -> None:
        async with Client(build_server(Settings(database_url=url, auto_migrate=False))) as client:
            await call_ok(client, "record_check", execution_id=execution, name="review", passed=False)

    # Playwright's sync API runs an event loop on this thread: the agents' clients run on another one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(anyio.run, upgrade_to_head, url).result(timeout=60)
        project, execution = pool.submit(anyio.run, fill).result(timeout=60)
    process, base = _start_ui(url)
    try:
        page = browser.new_page()
        page.goto(f"{base}/#/project/{project}")
        page.locator("tr[data-step='design'] .checks[data-checks='… review']").wait_for()
        assert page.locator("#graph [data-node='design'].held").count() == 1
        assert page.locator("#graph [data-node='build'].held").count() == 0
        page.evaluate("window.__loadedOnce = true")
        page.wait_for_function("feed !== null && feed.readyState === EventSource.OPEN", timeout=10_000)
        with ThreadPoolExecutor(1) as pool:
            pool.submit(anyio.run, fail_review, execution).result(timeout=30)
        page.locator("tr[data-step='design'] .checks[data-checks='✗ review']").wait_for(timeout=10_000)
        assert "✗ review" in (page.locator("#graph [data-node='design']").text_content() or "")
        assert page.evaluate("window.__loadedOnce === true"), "the page was reloaded"
    finally:
        _stop(process)
