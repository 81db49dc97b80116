"""docs/tools.md is generated from the live server and kept current."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent


async def test_committed_tool_reference_matches_the_server() -> None:
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = await module.generate()
    committed = (ROOT / "docs" / "tools.md").read_text()
    assert committed == generated, "docs/tools.md is stale: run python docs/generate.py"
    for tool in ("create_project", "record_execution", "get_cost_summary", "save_prompt_version"):
        assert f"### `{tool}`" in committed


def test_comments_cite_the_design_document_in_the_repository_by_its_headings() -> None:
    """No comment cites a document outside the repository; every docs/design.md citation names a heading."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    headings = {
        line.lstrip("#").strip()
        for line in (root / "docs" / "design.md").read_text().splitlines()
        if line.startswith("#")
    }
    offenders: list[str] = []
    cited: set[str] = set()
    for folder in ("mcp_server", "tests", "bench", "migrations"):
        for path in (root / folder).rglob("*.py"):
            source = path.read_text()
            if re.search(r"\b(SPEC|seed) §", source):
                offenders.append(str(path.relative_to(root)))
            cited |= set(re.findall(r'docs/design\.md, "([^"]+)"', source))
    assert offenders == []
    assert cited and cited <= headings, sorted(cited - headings)
