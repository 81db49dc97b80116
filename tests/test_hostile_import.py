"""Hostile bundles (issue 30, finding 3 and the import parts of 4 and 5): an import checks every row by the
tools' rules, recomputes what projects derive from their rows, never changes a project already here, keeps
pipelines DAGs, checks the header, refuses with one clear line and writes nothing; ``export -o`` never
writes through a planted link. On SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import os
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select

import mcp_server.models  # noqa: F401 - every table on Base.metadata
from mcp_server.cli.main import main
from mcp_server.db.base import Base
from mcp_server.db.engine import Database
from mcp_server.db.migrate import SCHEMA_HEAD
from mcp_server.services import bundle
from mcp_server.services.bundle_rows import ROW_MODELS
from tests.helpers import call_error, call_ok
from tests.test_bundle import _client, _fill
from tests.test_cli import run_cli

pytestmark = pytest.mark.anyio

Records = list[dict[str, Any]]


class Cli:
    """``pipeline-state-mcp`` run in this process (a traceback fails the test) on one database."""

    def __init__(self, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        for name in list(os.environ):
            if name.startswith("PIPELINE_STATE_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("PIPELINE_STATE_DATABASE_URL", url)
        self.capsys = capsys

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await anyio.to_thread.run_sync(partial(main, list(args)))
        out = self.capsys.readouterr()
        return code, out.out, out.err


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(db_url, monkeypatch, capsys)


async def _records(url: str) -> Records:
    db = Database.connect(url)
    try:
        async with db.unit_of_work(write=False) as session:
            records = list(await bundle.export(session))
    finally:
        await db.dispose()
    loaded: Records = json.loads(json.dumps(records, default=str))
    return loaded


async def _snapshot(url: str) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table: equal before and after proves a refused import wrote nothing."""
    db = Database.connect(url)
    try:
        async with db.unit_of_work(write=False) as session:
            return {
                table.name: sorted(tuple(str(v) for v in row) for row in await session.execute(select(table)))
                for table in Base.metadata.sorted_tables
            }
    finally:
        await db.dispose()


def _write(path: Path, records: Records, *, counted: bool = True) -> str:
    """The records as a bundle file; the header's counts made to match unless ``counted`` is false."""
    if counted:
        rows = records[1:]
        records[0]["counts"] = {kind: sum(1 for r in rows if r["kind"] == kind) for kind in bundle.KINDS}
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _renumbered(records: Records) -> Records:
    """The same projects under new ids: a bundle of projects this database does not have yet."""
    fresh: dict[str, str] = {}
    out = copy.deepcopy(records)
    for record in out:
        if record["kind"] in ("project", "execution", "check", "state", "cost"):
            for name in ("id", "project_id", "execution_id", "current_execution_id"):
                if record.get(name):
                    record[name] = fresh.setdefault(record[name], str(uuid.uuid4()))
        if record["kind"] in ("execution", "cost"):
            record.update(idempotency_key=None, request_hash=None, reply=None)
    return out


def _one(records: Records, kind: str, **match: Any) -> dict[str, Any]:
    return next(r for r in records if r["kind"] == kind and all(r.get(k) == v for k, v in match.items()))


def _refused(code: int, err: str, *words: str) -> None:
    assert code == 1, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "Nothing was written" in err or "nothing" in err.lower(), err
    for word in words:
        assert word in err, err


def test_every_row_model_covers_its_table_exactly() -> None:
    # An exported row always fits its model: no column is refused as unknown, none is left out.
    for kind, table in bundle.KINDS.items():
        assert set(ROW_MODELS[kind].model_fields) == set(table.c.keys()), kind


async def test_rows_into_an_existing_project_are_refused_and_nothing_is_written(
    db_url: str, cli: Cli, tmp_path: Path
) -> None:
    docs, _ = await _fill(db_url)
    records = await _records(db_url)
    before = await _snapshot(db_url)
    template = _one(records, "execution", project_id=docs, process_id="spec")
    # A running execution holding 1,000 USD in a project already here (with its step's state left as is).
    hold = {**template, "id": str(uuid.uuid4()), "status": "running", "reserved_usd": "1000", "output_data": None,
            "completed_at": None, "idempotency_key": None, "request_hash": None, "reply": None}  # fmt: skip
    code, _, err = await cli("import", _write(tmp_path / "hold.jsonl", [*records, hold]))
    _refused(code, err, "already here", docs)
    # A 500 USD cost row added to it.
    cost = {**_one(records, "cost", project_id=docs), "id": str(uuid.uuid4()), "cost_usd": "500",
            "cost_source": "reported", "execution_id": None, "idempotency_key": None, "reply": None}  # fmt: skip
    code, _, err = await cli("import", _write(tmp_path / "cost.jsonl", [*records, cost]))
    _refused(code, err, "already here")
    # Its figures forged in place: a clash, named.
    forged = copy.deepcopy(records)
    _one(forged, "project", id=docs)["reserved_usd"] = "0"
    code, _, err = await cli("import", _write(tmp_path / "forged.jsonl", forged))
    _refused(code, err, "reserved_usd")
    assert await _snapshot(db_url) == before
    async with _client(db_url) as client:
        await call_error(client, "fail_execution", "not_found", execution_id=hold["id"], error_message="x")
        project = await call_ok(client, "get_project", project_id=docs)
        assert project["reserved_usd"] == "0.25"
        # The block budget still holds: 3 USD, so a 900 USD start is refused.
        await call_error(client, "start_execution", "budget_exceeded", project_id=docs, process_id="review",
                         reserve_usd="900", force=True)  # fmt: skip


async def test_a_new_project_imports_only_with_figures_its_rows_make(db_url: str, cli: Cli, tmp_path: Path) -> None:
    await _fill(db_url)
    source = _renumbered(await _records(db_url))
    docs = _one(source, "project", name="docs")["id"]
    before = await _snapshot(db_url)
    forgeries: list[tuple[str, Any, str]] = [
        ("spent_usd", "-100", "spent_usd"),
        ("spent_usd", "0", "spent_usd"),
        ("reserved_usd", "-999.5", "reserved_usd"),
        ("reserved_usd", "5", "reserved_usd"),
        ("unpriced_calls", 0, "unpriced_calls"),
    ]
    for name, value, word in forgeries:
        forged = copy.deepcopy(source)
        _one(forged, "project", id=docs)[name] = value
        code, _, err = await cli("import", _write(tmp_path / "forged.jsonl", forged))
        _refused(code, err, word)
    # A 500 USD cost row with negative tokens; a hold on a finished execution; a running step with no
    # running execution; a current execution of another step.
    bad_rows: list[tuple[str, dict[str, Any], str]] = [
        ("cost", {"cost_usd": "500", "cost_source": "reported", "prompt_tokens": -5}, "prompt_tokens"),
        ("cost", {"total_tokens": 1}, "total_tokens"),
        ("execution", {"status": "completed", "reserved_usd": "1"}, "holds no budget"),
        ("state", {"state": "running", "process_id": "review"}, "no execution of its step"),
    ]
    for kind, change, word in bad_rows:
        forged = copy.deepcopy(source)
        target = _one(forged, kind, project_id=docs, **({"process_id": "review"} if kind == "state" else {}))
        target.update(change)
        code, _, err = await cli("import", _write(tmp_path / "bad.jsonl", forged))
        _refused(code, err, word)
    # Executions of a step whose state the bundle leaves out.
    without = [
        r for r in source if not (r["kind"] == "state" and r["project_id"] == docs and r["process_id"] == "spec")
    ]
    code, _, err = await cli("import", _write(tmp_path / "stateless.jsonl", without))
    _refused(code, err, "no state")
    assert await _snapshot(db_url) == before
    # The untouched bundle imports, and the imported project's budget works as the source's did.
    code, out, err = await cli("import", _write(tmp_path / "good.jsonl", source))
    assert code == 0 and "2 project" in out, err
    async with _client(db_url) as client:
        project = await call_ok(client, "get_project", project_id=docs)
        assert (project["spent_usd"], project["reserved_usd"]) == (
            _one(source, "project", id=docs)["spent_usd"],
            "0.25",
        )
        await call_error(client, "start_execution", "budget_exceeded", project_id=docs, process_id="review",
                         reserve_usd="900", force=True)  # fmt: skip


async def test_definitions_that_close_a_cycle_with_the_stored_pipeline_are_refused(
    db_url: str, cli: Cli, tmp_path: Path
) -> None:
    docs, _ = await _fill(db_url)
    records = await _records(db_url)
    before = await _snapshot(db_url)
    spec = _one(records, "definition", pipeline_id="docs", id="spec")
    d = {**spec, "id": "d", "name": "D", "depends_on": ["e"], "input_schema": None, "output_schema": None}
    e = {**d, "id": "e", "name": "E", "depends_on": ["d"]}
    code, _, err = await cli("import", _write(tmp_path / "cycle.jsonl", [*records, d, e]))
    _refused(code, err, "cycle", "d -> e -> d")
    unknown = {**d, "depends_on": ["nowhere"]}
    code, _, err = await cli("import", _write(tmp_path / "unknown.jsonl", [*records, unknown]))
    _refused(code, err, "nowhere")
    itself = {**d, "depends_on": ["d"]}
    code, _, err = await cli("import", _write(tmp_path / "self.jsonl", [*records, itself]))
    _refused(code, err, "itself")
    assert await _snapshot(db_url) == before
    async with _client(db_url) as client:
        status = await call_ok(client, "get_pipeline_status", project_id=docs)
        assert [p["process_id"] for p in status["processes"]] == ["spec", "draft", "review"]
    # A new step that depends on stored ones is a DAG: it imports.
    code, out, err = await cli("import", _write(tmp_path / "fine.jsonl", [*records, {**d, "depends_on": ["review"]}]))
    assert code == 0 and "1 definition" in out, err


WRONG: list[tuple[str, dict[str, Any], str]] = [
    ("project", {"metadata": "notadict"}, "metadata"),
    ("project", {"name": 5}, "name"),
    ("project", {"name": ""}, "name"),
    ("project", {"status": "exploded"}, "status"),
    ("project", {"budget_usd": 1.5}, "budget_usd"),
    ("project", {"budget_usd": "NaN"}, "budget_usd"),
    ("project", {"is_deleted": "yes"}, "is_deleted"),
    ("project", {"id": "not-a-uuid"}, "id"),
    ("project", {"created_at": "2024-01-01T00:00:00"}, "created_at"),
    ("project", {"created_at": 1700000000}, "created_at"),
    ("project", {"pipeline_id": "Not A Slug"}, "pipeline_id"),
    ("project", {"surprise": 1}, "surprise"),
    ("execution", {"status": "teleported"}, "status"),
    ("execution", {"input_data": None}, "input_data"),
    ("execution", {"project_id": "12"}, "project_id"),
    ("execution", {"reply": {"not": "a reply"}}, "reply"),
    ("state", {"version": 0}, "version"),
    ("state", {"version": -1}, "version"),
    ("state", {"version": True}, "version"),
    ("state", {"state": "weird"}, "state"),
    ("state", {"last_updated_at": "yesterday"}, "last_updated_at"),
    ("cost", {"inference_time_ms": 2**40}, "inference_time_ms"),
    ("cost", {"provider": ""}, "provider"),
    ("cost", {"cost_source": "unpriced"}, "cost_usd"),
    ("prompt_version", {"temperature": 7}, "temperature"),
    ("prompt_version", {"content_hash": "0" * 64}, "content_hash"),
    ("definition", {"output_schema": {"$ref": "https://example.com/x.json"}}, "output_schema"),
    ("definition", {"order_index": "1"}, "order_index"),
    ("check", {"name": "Not A Slug"}, "name"),
    ("check", {"name": "a" * 101}, "name"),
    ("check", {"passed": "yes"}, "passed"),
    ("check", {"passed": 1}, "passed"),
    ("check", {"details": "notadict"}, "details"),
    ("check", {"details": [1, 2]}, "details"),
    ("check", {"details": {"x": "y" * 2_000_000}}, "details"),
    ("check", {"agent": ""}, "agent"),
    ("check", {"execution_id": "12"}, "execution_id"),
    ("check", {"created_at": "2024-01-01T00:00:00"}, "created_at"),
    ("check", {"surprise": 1}, "surprise"),
]


async def test_rows_of_the_wrong_type_or_range_are_refused_on_one_line(db_url: str, cli: Cli, tmp_path: Path) -> None:
    await _fill(db_url)
    source = _renumbered(await _records(db_url))
    before = await _snapshot(db_url)
    for kind, change, word in WRONG:
        forged = copy.deepcopy(source)
        target = next(r for r in forged if r["kind"] == kind and (kind != "cost" or r["cost_usd"] is not None))
        target.update(change)
        code, _, err = await cli("import", _write(tmp_path / "wrong.jsonl", forged))
        _refused(code, err, word)
    # Text no JSON record holds: NaN, a nesting far too deep, an integer of 5,000 digits, not UTF-8.
    header = json.dumps(source[0])
    for body, word in [
        ('{"kind": "project", "budget_usd": NaN}', "NaN"),
        ('{"kind": "project", "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}", "line 2"),
        ('{"kind": "project", "unpriced_calls": ' + "9" * 5000 + "}", "line 2"),
    ]:
        (tmp_path / "raw.jsonl").write_text(header + "\n" + body + "\n")
        code, _, err = await cli("import", str(tmp_path / "raw.jsonl"))
        _refused(code, err, word)
    (tmp_path / "binary.jsonl").write_bytes(header.encode() + b"\n\xff\xfe\n")
    code, _, err = await cli("import", str(tmp_path / "binary.jsonl"))
    _refused(code, err, "UTF-8")
    assert await _snapshot(db_url) == before
    async with _client(db_url) as client:  # every project still lists
        assert (await call_ok(client, "list_projects"))["total"] == 2


async def test_the_header_is_checked_and_a_bundle_cut_short_is_refused(db_url: str, cli: Cli, tmp_path: Path) -> None:
    await _fill(db_url)
    source = _renumbered(await _records(db_url))
    before = await _snapshot(db_url)
    path = tmp_path / "b.jsonl"
    code, _, err = await cli("import", _write(path, source[:-1], counted=False))  # cut at a line boundary
    _refused(code, err, "incomplete")
    code, _, err = await cli("import", _write(path, source[: len(source) // 2], counted=False))
    _refused(code, err, "incomplete")
    extra = _renumbered(source)
    code, _, err = await cli("import", _write(path, [*source, *extra[1:3]], counted=False))
    _refused(code, err, "incomplete")
    for revision in ("9999", f"{int(SCHEMA_HEAD) + 1:04d}", 5, None, "../x"):
        future = copy.deepcopy(source)
        future[0]["schema_revision"] = revision
        code, _, err = await cli("import", _write(path, future))
        _refused(code, err, "schema revision")
    for counts in (None, "all", {"project": -1}, {"project": True}, {"everything": 1}):
        odd = copy.deepcopy(source)
        odd[0]["counts"] = counts
        code, _, err = await cli("import", _write(path, odd, counted=False))
        _refused(code, err, "counts")
    assert await _snapshot(db_url) == before


async def test_a_refused_row_at_the_end_leaves_the_whole_bundle_unwritten(
    db_url: str, cli: Cli, tmp_path: Path
) -> None:
    await _fill(db_url)
    source = _renumbered(await _records(db_url))
    before = await _snapshot(db_url)
    last = {**_one(source, "state", process_id="spec"), "id": str(uuid.uuid4()), "process_id": "unheard-of"}
    code, _, err = await cli("import", _write(tmp_path / "b.jsonl", [*source, last]))
    _refused(code, err, "unheard-of")
    duplicate = _one(source, "cost", cost_source="unpriced")
    code, _, err = await cli("import", _write(tmp_path / "b.jsonl", [*source, duplicate]))
    _refused(code, err, "twice")
    assert await _snapshot(db_url) == before


async def test_refusals_through_the_installed_command_are_one_line_with_exit_code_1(
    sqlite_template: Path, tmp_path: Path
) -> None:
    from tests.conftest import fresh_sqlite_url

    url = fresh_sqlite_url(sqlite_template, tmp_path)
    await _fill(url)
    source = _renumbered(await _records(url))
    for change in ({"created_at": "2024-01-01T00:00:00"}, {"id": "zzz"}, {"metadata": {"x": float("nan")}}):
        forged = copy.deepcopy(source)
        _one(forged, "project", name="docs").update(change)
        path = _write(tmp_path / "b.jsonl", forged)
        done = run_cli("import", path, url=url)
        _refused(done.returncode, done.stderr)


async def test_export_never_writes_through_a_planted_link(db_url: str, cli: Cli, tmp_path: Path) -> None:
    await _fill(db_url)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / "out.jsonl"
    (tmp_path / ".out.jsonl.partial").symlink_to(victim)
    code, _, err = await cli("export", "-o", str(target))
    assert code == 0, err
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and json.loads(target.read_text().splitlines()[0])["kind"] == "header"
    assert (tmp_path / ".out.jsonl.partial").is_symlink()  # left alone, never followed
    assert [name for name in os.listdir(tmp_path) if name.startswith(".out.jsonl.")] == [".out.jsonl.partial"]
    # The target itself a link: replaced by the file, the file it pointed at untouched.
    target.unlink()
    target.symlink_to(victim)
    code, _, err = await cli("export", "-o", str(target))
    assert code == 0 and not target.is_symlink() and victim.read_text() == "precious\n", err
    code, _, err = await cli("export", "-o", str(tmp_path / "missing" / "out.jsonl"))
    assert code == 1 and "no directory" in err and "Traceback" not in err


async def test_a_check_reaches_only_a_finished_execution_of_its_own_project_and_step(
    db_url: str, cli: Cli, tmp_path: Path
) -> None:
    # "Imports forge holds": a check row decides whether a step's dependants run, so one pointing at another
    # project's execution would release (or hold) that project's steps. It is refused, naming the row.
    docs_here, plain_here = await _fill(db_url)
    records = await _records(db_url)
    source = _renumbered(records)
    docs = _one(source, "project", name="docs")["id"]
    before = await _snapshot(db_url)
    peer = _one(source, "check", name="peer")
    spec = _one(source, "execution", project_id=docs, process_id="spec", status="completed")
    running = _one(source, "execution", project_id=docs, status="running")
    stored = _one(records, "execution", id=_one(records, "check", name="spell-check")["execution_id"])
    assert stored["project_id"] == docs_here and stored["process_id"] == "spec"

    def forged(**change: Any) -> dict[str, Any]:
        return {**peer, "id": str(uuid.uuid4()), "name": "forged", **change}

    cases: list[tuple[dict[str, Any], str]] = [
        # plain's check on an execution of docs (both in the bundle): the other project's execution.
        (forged(execution_id=spec["id"], process_id="spec"), f"is of project {docs}, not of the check's project"),
        # plain's check on an execution of a project already here.
        (forged(execution_id=stored["id"], process_id="spec"), "which the bundle does not add"),
        # on no execution at all.
        (forged(execution_id=str(uuid.uuid4())), "which the bundle does not add"),
        # its own project's execution, but another step named.
        (forged(project_id=docs, execution_id=spec["id"]), "names step 'solo', but its execution"),
        # an execution still running: record_check refuses to check one.
        (forged(project_id=docs, process_id="draft", execution_id=running["id"]), "still running"),
        # the same check of the same execution twice.
        (forged(name="peer"), "second check 'peer'"),
    ]
    for row, words in cases:
        code, _, err = await cli("import", _write(tmp_path / "forged.jsonl", [*source, row]))
        _refused(code, err, "invalid_argument", f"check {row['id']}", words)
    # A check added to projects already here, even on their own executions: refused as every such row is.
    plain_check = _one(records, "check", name="peer")
    for row in (
        {**plain_check, "id": str(uuid.uuid4()), "name": "extra"},
        {**plain_check, "id": str(uuid.uuid4()), "execution_id": stored["id"], "process_id": "spec"},
    ):
        code, _, err = await cli("import", _write(tmp_path / "here.jsonl", [*records, row]))
        _refused(code, err, "conflict", "already here", plain_here)
    # A stored check changed in place (a failed one made to pass): a clash, named.
    flipped = copy.deepcopy(records)
    _one(flipped, "check", name="style")["passed"] = True
    code, _, err = await cli("import", _write(tmp_path / "flipped.jsonl", flipped))
    _refused(code, err, "conflict", "differs in passed")
    assert await _snapshot(db_url) == before

    # The untouched bundle imports with its checks, and importing it again changes nothing.
    code, out, err = await cli("import", _write(tmp_path / "good.jsonl", source))
    assert code == 0 and "3 check" in out, err
    code, out, err = await cli("import", _write(tmp_path / "good.jsonl", source))
    assert code == 0 and "nothing new" in out, err
    async with _client(db_url) as client:
        status = await call_ok(client, "get_pipeline_status", project_id=peer["project_id"])
        after = next(row for row in status["processes"] if row["process_id"] == "after")
        assert after["can_run"] is True, after
        # The stored project's execution has only its own check.
        found = await call_ok(client, "get_execution", execution_id=stored["id"])
        assert [c["name"] for c in found["checks"]] == ["spell-check"]


async def test_a_format_1_bundle_without_checks_still_imports(db_url: str, cli: Cli, tmp_path: Path) -> None:
    await _fill(db_url)
    source = _renumbered(await _records(db_url))
    plain = _one(source, "project", name="plain")["id"]
    peer = _one(source, "check", name="peer")
    old = [record for record in source if record["kind"] != "check"]
    old[0]["format_version"] = 1
    old[0]["counts"] = {kind: sum(1 for r in old[1:] if r["kind"] == kind) for kind in bundle.KINDS_OF_VERSION[1]}
    before = await _snapshot(db_url)
    # Format 1 carries no checks: a check record, or a count of them, in one is refused.
    code, _, err = await cli("import", _write(tmp_path / "b.jsonl", [*old, peer], counted=False))
    _refused(code, err, "unknown kind 'check'", "format version 1")
    counted = copy.deepcopy(old)
    counted[0]["counts"]["check"] = 0
    code, _, err = await cli("import", _write(tmp_path / "b.jsonl", counted, counted=False))
    _refused(code, err, "counts")
    for version in (3, 0, "2", None, True):
        odd = copy.deepcopy(source)
        odd[0]["format_version"] = version
        code, _, err = await cli("import", _write(tmp_path / "b.jsonl", odd))
        _refused(code, err, "format version")
    assert await _snapshot(db_url) == before
    code, out, err = await cli("import", _write(tmp_path / "old.jsonl", old, counted=False))
    assert code == 0 and "2 project" in out and "check" not in out, err
    async with _client(db_url) as client:
        # Its executions had checks the old format could not carry: the step they released is held here.
        status = await call_ok(client, "get_pipeline_status", project_id=plain)
        after = next(row for row in status["processes"] if row["process_id"] == "after")
        assert after["can_run"] is False and after["blocked_by"] == ["check peer of solo: missing"], after
