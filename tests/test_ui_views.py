"""The dashboard's project view on a large pipeline, through the real app on real databases (SQLite and
PostgreSQL): an unchanged view answers 304 without being built (its ETag comes from change tokens read
first), any change an agent makes is seen, and a view is bounded in steps and bytes whatever the
pipeline's size. Builds are counted through build_app's ``on_build`` hook."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client

from mcp_server.db.engine import Database
from mcp_server.server import build_server
from mcp_server.services import dashboard
from mcp_server.settings import Settings
from mcp_server.ui.web import build_app
from tests.helpers import call_ok

pytestmark = pytest.mark.anyio

STEPS = 450
FAN_IN = 25  # the first FAN_IN steps feed every step of the first page: rows as wide as they get


def _step_id(n: int) -> str:
    return f"step-{n:04d}-" + "p" * 85  # 95 characters: near the 100-character limit


def _pipeline() -> list[dict[str, Any]]:
    steps = []
    for n in range(STEPS):
        if n < FAN_IN:
            depends_on: list[str] = []
        elif n < dashboard.STEP_PAGE:
            depends_on = [_step_id(k) for k in range(FAN_IN)]
        else:
            depends_on = [_step_id(n - 1)]
        steps.append({"process_id": _step_id(n), "name": f"Step {n} " + "n" * 190, "depends_on": depends_on})
    return steps


async def _agent(url: str) -> Client:
    return Client(build_server(Settings(database_url=url, auto_migrate=False)))


async def _fill(url: str) -> str:
    async with await _agent(url) as client:
        await call_ok(client, "apply_pipeline", processes=_pipeline())
        project = (await call_ok(client, "create_project", name="Wide", budget_usd="5"))["id"]
        for n in range(3):
            output = {"text": "y" * 20_000, "n": n}
            await call_ok(client, "record_execution", project_id=project, process_id=_step_id(n), output_data=output)
    return str(project)


@asynccontextmanager
async def _dashboard(url: str, built: list[str]) -> AsyncIterator[httpx2.AsyncClient]:
    database = Database.connect(url, read_only=True)
    app = build_app(database, token=None, allowed_hosts=None, on_build=built.append)
    try:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            yield http
    finally:
        await database.dispose()


async def test_an_unchanged_project_view_answers_304_without_being_built(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "VIEW_CLOCK", 1e12)  # time alone changes nothing here (see the test below)
    project = await _fill(db_url)
    path = f"/api/projects/{project}"
    built: list[str] = []
    async with _dashboard(db_url, built) as http:
        first = await http.get(path)
        assert first.status_code == 200 and built == [path]
        tag = first.headers["etag"]
        for _ in range(5):  # the page's polls
            polled = await http.get(path, headers={"If-None-Match": tag})
            assert polled.status_code == 304 and polled.headers["etag"] == tag
        again = await http.get(path)  # another tab, no tag yet: the copy kept with its tokens
        assert again.status_code == 200 and again.content == first.content and again.headers["etag"] == tag
        assert built == [path], "an unchanged view was built again"

        async def changed(change: str, *arguments: Any, **named: Any) -> dict[str, Any]:
            nonlocal tag
            async with await _agent(db_url) as client:
                await call_ok(client, change, *arguments, **named)
            seen = await http.get(path, headers={"If-None-Match": tag})
            assert seen.status_code == 200 and seen.headers["etag"] != tag, change
            tag = seen.headers["etag"]
            assert (await http.get(path, headers={"If-None-Match": tag})).status_code == 304
            return dict(seen.json())

        step = _step_id(3)
        view = await changed("record_execution", project_id=project, process_id=step, output_data={"v": 1})
        assert {s["id"]: s["state"] for s in view["steps"]}[step] == "completed"
        view = await changed("start_execution", project_id=project, process_id=_step_id(4))
        assert view["counts"]["running"] == 1
        view = await changed("update_project", project_id=project, budget_usd="7")
        assert view["budget"]["budget_usd"] == "7"
        view = await changed("define_process", process_id="late", name="Late step")
        assert view["steps_total"] == STEPS + 1
        assert len(built) == 5 and set(built) == {path}

        async with await _agent(db_url) as client:  # a change, then four tabs open at once: one build
            await call_ok(client, "record_execution", project_id=project, process_id=_step_id(5), output_data={})
        tabs: list[httpx2.Response] = []

        async def tab() -> None:
            tabs.append(await http.get(path))

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(tab)
        assert len({response.content for response in tabs}) == 1 and all(r.status_code == 200 for r in tabs)
        assert len(built) == 6


async def test_the_project_view_is_bounded_in_steps_and_bytes(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    project = await _fill(db_url)
    path = f"/api/projects/{project}"
    async with _dashboard(db_url, []) as http:
        first = await http.get(path)
        view = first.json()
        assert len(view["steps"]) == dashboard.STEP_PAGE and view["steps_total"] == STEPS
        assert view["steps_omitted"] == STEPS - dashboard.STEP_PAGE and view["steps_first"] == 1
        assert view["counts"]["completed"] == 3 and sum(view["counts"].values()) == STEPS  # counts cover all steps
        assert len(first.content) < dashboard.MAX_VIEW_BYTES
        wide = view["steps"][FAN_IN]
        assert len(wide["depends_on"]) == dashboard.MAX_DEPENDS_SHOWN and wide["depends_count"] == FAN_IN
        previews = [s["output"] for s in view["steps"] if s["output"] is not None]
        assert len(previews) == 3 and all(len(p) <= dashboard.PREVIEW_CHARS and '"y' in p for p in previews)

        last = (await http.get(path, params={"page": 3})).json()
        assert len(last["steps"]) == STEPS - 2 * dashboard.STEP_PAGE
        assert last["steps_first"] == 2 * dashboard.STEP_PAGE + 1
        assert last["steps"][-1]["id"] == _step_id(STEPS - 1)
        assert (await http.get(path, params={"page": 99})).json()["steps"] == []

        monkeypatch.setattr(dashboard, "MAX_VIEW_BYTES", 40_000)  # the byte bound cuts before the step bound
        cut = await http.get(path, params={"page": 2})
        view = cut.json()
        assert 0 < len(view["steps"]) < dashboard.STEP_PAGE
        assert view["steps_omitted"] == STEPS - len(view["steps"])
        assert len(json.dumps(view["steps"], separators=(",", ":"))) <= 40_000


async def test_a_view_with_a_running_step_is_built_again_once_a_clock_period(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running (or failed) step can change with time alone (its lease runs out, its retry comes due):
    such a view is built again once a VIEW_CLOCK period however often it is polled, and not in between."""
    monkeypatch.setattr(dashboard, "VIEW_CLOCK", 1e12)
    project = await _fill(db_url)
    path = f"/api/projects/{project}"
    built: list[str] = []
    async with _dashboard(db_url, built) as http:
        async with await _agent(db_url) as client:
            await call_ok(client, "start_execution", project_id=project, process_id=_step_id(3))
        tag = (await http.get(path)).headers["etag"]
        for _ in range(3):
            assert (await http.get(path, headers={"If-None-Match": tag})).status_code == 304
        assert len(built) == 1
        monkeypatch.setattr(dashboard, "VIEW_CLOCK", 0.2)
        seen = {tag}
        for _ in range(3):
            await anyio.sleep(0.25)  # a new period
            response = await http.get(path, headers={"If-None-Match": tag})
            assert response.status_code == 200 and response.headers["etag"] not in seen
            tag = response.headers["etag"]
            seen.add(tag)
        assert len(built) == 4
