"""The dashboard (issue 15) in a real browser: `pipeline-state-mcp ui` serves a database that a real MCP
client filled (a diamond pipeline with a stale branch, a running step and costs); headless Chromium
(Debian's package, driven by Playwright) loads its pages, and the rendered DOM must show every step
with its state, the stale step's cause, and cost totals equal to get_cost_summary's. The page updates by
itself while an agent records. Without Chromium these tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

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
    url: str, *extra: str, token: str | None = None, host: str = "127.0.0.1"
) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "PIPELINE_STATE_DATABASE_URL": url}
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
