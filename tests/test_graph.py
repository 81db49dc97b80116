"""The Mermaid picture of a project's pipeline (issue 15, part 1): the resource and ``status --graph``."""

from __future__ import annotations

import re

import pytest
from mcp import Client

from tests.helpers import call_ok
from tests.test_cli import run_cli
from tests.test_pipeline_tools import diamond, record

pytestmark = pytest.mark.anyio


async def test_the_graph_draws_every_step_coloured_by_state_with_the_stale_cause(client: Client, db_url: str) -> None:
    project = await diamond(client)  # a -> b, a -> c, b -> d, c -> d
    for pid in "abcd":
        await record(client, project, pid, 1)
    await record(client, project, "b", 2)  # d goes stale, caused by b
    await call_ok(client, "start_execution", project_id=project, process_id="c")

    resource = await client.read_resource(f"pipeline://projects/{project}/graph")
    content = resource.contents[0]
    assert content.mime_type == "text/vnd.mermaid"
    text = content.text  # type: ignore[union-attr]
    assert text.startswith("flowchart TD\n")
    nodes = dict(re.findall(r'^    (n\d+)\["([^"]*)"\]', text, re.MULTILINE))
    labels = {label.split("<br/>")[0]: (node, label) for node, label in nodes.items()}
    assert set(labels) == {"a", "b", "c", "d"}
    assert labels["a"][1] == "a<br/>completed · v1" and labels["b"][1] == "b<br/>completed · v2"
    assert labels["c"][1] == "c<br/>running · v2" and labels["d"][1] == "d<br/>stale · v2<br/>cause: b"
    for state in ("completed", "stale", "failed", "running", "empty"):
        assert f"classDef {state} fill:" in text
    assert f'{labels["d"][0]}["{labels["d"][1]}"]:::stale' in text
    edges = set(re.findall(r"^    (n\d+) --> (n\d+)$", text, re.MULTILINE))
    expected = {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")}
    assert edges == {(labels[x][0], labels[y][0]) for x, y in expected}

    printed = run_cli("status", project, "--graph", url=db_url)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == text
