"""``build_server(settings)``: the MCP server, its lifespan, error model and DB-backed MCP prompts."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel import NotificationOptions
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    EmptyResult,
    GetPromptResult,
    Icon,
    InputRequiredResult,
    Prompt,
    PromptArgument,
    PromptMessage,
    PromptReference,
    Resource,
    ResourceTemplateReference,
    SetLevelRequestParams,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    TextContent,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from mcp_server.app import App, DatabaseHandle
from mcp_server.errors import DomainError, NotMigrated, database_error, describe_cause, error_codes
from mcp_server.live import LiveHub
from mcp_server.schemas.portable import describe_unknown, unknown_arguments, without_null_optionals, without_nulls
from mcp_server.settings import Settings

if TYPE_CHECKING:
    from mcp_server.db.engine import Database

log = logging.getLogger(__name__)

INSTRUCTIONS = """\
Keeps the state of multi-step pipelines and the cost of your LLM calls.
1. create_project once per unit of work; define_process once per pipeline step (depends_on makes a DAG).
2. get_pipeline_status shows each step's state, `ready_processes` (the steps you can run now) and
   `plan` (every step not completed, in the order to run them).
3. For a step: start_execution (it hands over `inputs`: each dependency's current output), then
   record_execution with its output (or one record_execution call alone), or fail_execution. A new
   output makes every completed step downstream `stale`: re-run them in `plan` order.
4. report_cost (or `usage` on record_execution) logs tokens and cost; get_cost_summary sums them.
A step's `version` rises by 1 at every state change (start, record, fail, invalidate, going stale):
pass the one you last read as expected_version. Agents sharing a step never overwrite each other
silently: recording while another execution runs needs force, and a finish that another execution's
result overtook is kept as `superseded`.
Optional arguments may be left out or sent as null (the same thing); replies leave out null fields.
A project's budget (budget_usd) is checked at start_execution: reserve_usd holds the step's expected
cost until it finishes, and under budget_policy `block` a start that would pass the budget is refused
(budget_exceeded); costs already incurred are always logged, and replies say which threshold
(50/80/100 %) a call crossed.
Errors start with a stable code ({codes}) and say what to do next.""".format(codes=", ".join(error_codes()))


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pipeline-state-mcp")
    except PackageNotFoundError:
        return "0+unknown"


def _describe_validation(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{field}: {error['msg']}")
    return "; ".join(problems)


def _unlogged_usage(arguments: dict[str, Any]) -> str:
    """For a refused call that carried `usage`: say it was not logged, and give the report_cost call that
    logs it (the LLM call was paid for whatever happened to its output)."""
    usage = arguments.get("usage")
    if not isinstance(usage, dict) or not usage:
        return ""
    call = {key: value for key, value in usage.items() if value is not None}
    for key in ("project_id", "process_id", "execution_id"):
        if isinstance(arguments.get(key), str):
            call[key] = arguments[key]
    text = json.dumps(call, ensure_ascii=False, separators=(",", ":"))
    if len(text) > 1_000:
        text = text[:1_000] + "…"
    return f". The `usage` was NOT logged; to log it, call report_cost with {text}"


def _compact_reply(
    result: CallToolResult | InputRequiredResult, output_schema: dict[str, Any] | None
) -> CallToolResult | InputRequiredResult:
    """The reply without its null fields (as the output schema publishes it), and its text as compact JSON."""
    if not isinstance(result, CallToolResult) or result.is_error or result.structured_content is None:
        return result
    if output_schema is None:
        return result
    structured = without_nulls(result.structured_content, output_schema, output_schema)
    text = json.dumps(structured, ensure_ascii=False, separators=(",", ":"))
    return result.model_copy(update={"content": [TextContent(text=text)], "structured_content": structured})


# Admission (settings max_running_calls and max_waiting_calls): calls run at most so many at a time, and
# at most so many more wait for a slot; past that a call is answered `busy` at once, so a client that
# pipelines thousands of calls gets fast, retryable answers instead of pool time-outs.
BUSY = "busy: the server is overloaded; nothing was written. Back off (wait a second or two) and retry"


class IncidentLog:
    """One log line per incident, not per call: the first occurrence, then a count every ``every`` s."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.every) < self.every:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        more = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        log.warning("%s%s", message, f" ({more} more since the last report)" if more else "")


# The App of the prompts/list or completion/complete request being served: the SDK's public list_prompts
# and completion handlers take no context, so the middleware below hands them the request's (the SDK runs
# the handler inside the middleware chain).
_LISTING_APP: ContextVar[App | None] = ContextVar("pipeline_state_listing_app", default=None)
_APP_METHODS = frozenset({"prompts/list", "resources/list", "completion/complete"})
# Writers whose call may add or remove a pipeline (resources/list names one resource per pipeline).
PIPELINE_WRITERS = frozenset({"define_process", "apply_pipeline", "delete_process"})


async def _prompt_listing_context(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    if ctx.method == "subscriptions/listen":
        return await _listen(ctx, call_next)
    if ctx.method not in _APP_METHODS:
        return await call_next(ctx)
    token = _LISTING_APP.set(ctx.lifespan_context)
    try:
        return await call_next(ctx)
    finally:
        _LISTING_APP.reset(token)


async def _listen(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """A subscriptions/listen stream: its resource URIs are watched (mcp_server/live.py) while it lasts."""
    hub = getattr(ctx.lifespan_context, "live", None)
    try:
        params = SubscriptionsListenRequestParams.model_validate(ctx.params or {})
    except ValidationError:
        return await call_next(ctx)  # the SDK answers the invalid request
    uris = list(params.notifications.resource_subscriptions or ())
    if hub is None or not uris:
        return await call_next(ctx)
    async with hub.listening(uris):
        return await call_next(ctx)


async def _subscribe(ctx: ServerRequestContext[App, Any], params: SubscribeRequestParams) -> EmptyResult:
    hub = ctx.lifespan_context.live
    if hub is None:
        raise MCPError(code=INVALID_PARAMS, message="this server has no resources to subscribe to")
    await hub.subscribe(ctx.session, str(params.uri))
    return EmptyResult()


async def _unsubscribe(ctx: ServerRequestContext[App, Any], params: UnsubscribeRequestParams) -> EmptyResult:
    if ctx.lifespan_context.live is not None:
        ctx.lifespan_context.live.unsubscribe(ctx.session, str(params.uri))
    return EmptyResult()


async def _set_level(ctx: ServerRequestContext[App, Any], params: SetLevelRequestParams) -> EmptyResult:
    """logging/setLevel (2025-11-25 sessions): the least level of the log messages this session gets
    (budget alerts are sent at `warning`)."""
    from mcp_server.tools.base import LOG_LEVELS

    LOG_LEVELS[ctx.session] = str(params.level)
    return EmptyResult()


class PipelineStateServer(MCPServer[App]):
    """MCPServer with the error model of docs/tools.md (a stable code first, then what to do) and prompts
    backed by saved prompt versions."""

    def __init__(
        self,
        *,
        tools: list[Tool] | None = None,
        hidden_write_tools: Iterable[str] = (),
        max_running_calls: int = 12,
        max_waiting_calls: int = 500,
        database_label: str = "the database",
        **kwargs: Any,
    ) -> None:
        super().__init__(tools=tools, middleware=[_prompt_listing_context], **kwargs)
        # The tools as the SDK runs them (the same objects), read for their schemas on every call.
        self.registered_tools: dict[str, Tool] = {tool.name: tool for tool in tools or ()}
        self.hidden_write_tools: set[str] = set(hidden_write_tools)
        self._context_resources: dict[str, tuple[Resource, Callable[[App], Awaitable[str]]]] = {}
        self.max_running_calls = max_running_calls
        self.max_waiting_calls = max_waiting_calls
        self._running = anyio.Semaphore(max_running_calls)
        self._waiting = 0
        # How logs name the database (its URL with the password masked).
        self.database_label = database_label
        self.incidents = IncidentLog()
        self.completion()(self.complete)  # type: ignore[no-untyped-call]  # the SDK leaves it unannotated

    def add_tool(
        self,
        fn: Callable[..., Any],
        name: str | None = None,
        title: str | None = None,
        description: str | None = None,
        annotations: ToolAnnotations | None = None,
        icons: list[Icon] | None = None,
        meta: dict[str, Any] | None = None,
        structured_output: bool | None = None,
    ) -> None:
        """A tool added after construction: the SDK builds it from ``fn`` as ``Tool.from_function`` does."""
        options: dict[str, Any] = {"name": name, "title": title, "description": description, "icons": icons}
        options |= {"annotations": annotations, "meta": meta, "structured_output": structured_output}
        super().add_tool(fn, **options)
        tool = Tool.from_function(fn, **options)
        self.registered_tools.setdefault(tool.name, tool)

    def remove_tool(self, name: str) -> None:
        super().remove_tool(name)
        self.registered_tools.pop(name, None)

    def add_context_resource(
        self, uri: str, read: Callable[[App], Awaitable[str]], *, name: str, title: str, description: str
    ) -> None:
        """A static resource read from the database: the SDK gives static resources no context."""
        resource = Resource(uri=uri, name=name, title=title, description=description, mime_type="application/json")
        self._context_resources[uri] = (resource, read)

    async def list_resources(self) -> list[Resource]:
        listed = [*(resource for resource, _ in self._context_resources.values()), *await super().list_resources()]
        app = _LISTING_APP.get()
        if app is None or "pipeline" not in app.settings.enabled_toolsets:
            return listed
        with self._database_errors():
            pipelines = await self._catalogued(app)
        return listed + [
            Resource(
                uri=f"pipeline://pipelines/{pipeline_id}",
                name=f"pipeline-{pipeline_id}",
                title=f"Pipeline {pipeline_id}",
                description=f"The `{pipeline_id}` pipeline's process catalogue in topological order.",
                mime_type="application/json",
            )
            for pipeline_id in sorted(pipelines)
        ]

    async def _catalogued(self, app: App) -> frozenset[str]:
        from mcp_server.services import live

        return frozenset(await app.db.run(live.catalogued_pipelines, write=False))

    async def _announce(
        self, name: str, result: Any, context: Context[App, Any] | None, pipelines: frozenset[str] | None
    ) -> None:
        """After a write: the watcher checks at once; prompts or resources list_changed when the call changed
        the list (to listen streams, and to this session on the 2025-11-25 path)."""
        if context is None or not isinstance(result, CallToolResult) or result.is_error:
            return
        app: App = context.request_context.lifespan_context
        if app.live is not None:
            app.live.poke()
        legacy = context.request_context.protocol_version not in MODERN_PROTOCOL_VERSIONS
        if name == "save_prompt_version" and (result.structured_content or {}).get("created"):
            await context.notify_prompts_changed()
            if legacy:
                await context.session.send_prompt_list_changed()
        if pipelines is not None and await self._catalogued(app) != pipelines:
            await context.notify_resources_changed()
            if legacy:
                await context.session.send_resource_list_changed()

    async def read_resource(self, uri: Any, context: Context[App, Any] | None = None) -> Any:
        entry = self._context_resources.get(str(uri))
        with self._database_errors():
            if entry is None or context is None:
                return await super().read_resource(uri, context)
            text = await entry[1](context.request_context.lifespan_context)
        return [ReadResourceContents(content=text, mime_type="application/json")]

    @contextmanager
    def _database_errors(self) -> Iterator[None]:
        """Resources and prompts: a database failure is answered as a tool call's is (its code, what to
        do) instead of the SDK's bare "Internal server error"; any other error goes on as it is."""
        try:
            yield
        except MCPError:
            raise
        except Exception as exc:
            cause: BaseException | None = exc
            while cause is not None and database_error(cause) is None:  # the SDK may wrap it
                cause = cause.__cause__
            mapped = None if cause is None else database_error(cause)
            if mapped is None:
                raise
            self._log_database_error(mapped, cause)
            raise MCPError(code=INTERNAL_ERROR, message=mapped.render()) from None

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[App, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        prefix = f"Error executing tool {name}"
        if name in self.hidden_write_tools:
            raise ToolError(f"{prefix}: read_only: {name} writes, and this server runs read-only")
        registered = self.registered_tools.get(name)
        if registered is None:
            raise ToolError(f"{prefix}: not_found: there is no tool named {name!r}. Call tools/list")
        unknown = unknown_arguments(arguments, registered.parameters)
        if unknown:
            described = describe_unknown(unknown, registered.parameters)
            raise ToolError(f"{prefix}: invalid_argument: {described}{_unlogged_usage(arguments)}")
        # null for an optional argument means "not given" (OpenAI strict mode sends every key).
        arguments = without_null_optionals(arguments, registered.parameters)
        if self._running.value == 0 and self._waiting >= self.max_waiting_calls:  # no slot free, queue full
            waiting = self.max_waiting_calls
            self.incidents.warning("busy", f"overloaded: more than {waiting} calls waiting; answering busy")
            raise ToolError(f"{prefix}: {BUSY}")
        self._waiting += 1
        try:
            await self._running.acquire()
        finally:
            self._waiting -= 1
        try:
            # A cancelled call (notifications/cancelled, the client gone): before its transaction nothing
            # runs; inside it the transaction ends whole, committed or rolled back (docs/design.md, "SQLite").
            pipelines = None
            if name in PIPELINE_WRITERS and context is not None:
                pipelines = await self._before_pipeline_write(prefix, context)
            result = await super().call_tool(name, arguments, context)
            if not (registered.annotations and registered.annotations.read_only_hint):
                await self._announce(name, result, context, pipelines)
        except UnexpectedToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, DomainError):
                unlogged = "" if cause.keeps_writes else _unlogged_usage(arguments)  # its usage was logged
                raise ToolError(f"{prefix}: {cause.render()}{unlogged}") from cause
            mapped = None if cause is None else database_error(cause)
            if mapped is not None:
                self._log_database_error(mapped, cause)
                raise ToolError(f"{prefix}: {mapped.render()}{_unlogged_usage(arguments)}") from None
            raise UnexpectedToolError(
                f"{prefix}: internal: unexpected server error; nothing was written. Retry, or report it"
            ) from cause
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                detail = _describe_validation(exc.__cause__)
                raise ToolError(
                    f"{prefix}: invalid_argument: {detail}. Fix these arguments (see the input schema) and retry"
                    + _unlogged_usage(arguments)
                ) from exc.__cause__
            raise
        finally:
            self._running.release()
        return _compact_reply(result, registered.output_schema)

    async def _before_pipeline_write(self, prefix: str, context: Context[App, Any]) -> Any:
        """The pipelines before a pipeline writer runs (to announce list changes), read outside the tool: its
        failures are answered as the tool's own would be (a code first, then what to do)."""
        try:
            return await self._catalogued(context.request_context.lifespan_context)
        except DomainError as exc:
            raise ToolError(f"{prefix}: {exc.render()}") from exc
        except Exception as exc:
            mapped = database_error(exc)
            if mapped is None:
                raise UnexpectedToolError(
                    f"{prefix}: internal: unexpected server error; nothing was written. Retry, or report it"
                ) from exc
            self._log_database_error(mapped, exc)
            raise ToolError(f"{prefix}: {mapped.render()}") from None

    def _log_database_error(self, mapped: DomainError, cause: BaseException | None) -> None:
        """One line per incident kind, with the cause's own message (URLs masked) and the database."""
        reason = describe_cause(cause) if cause is not None else "unknown"
        if isinstance(mapped, NotMigrated):
            message = f"{self.database_label} is not migrated ({reason}): run `pipeline-state-mcp db upgrade`"
            self.incidents.warning("not_migrated", message)
        else:
            self.incidents.warning(mapped.code, f"{mapped.code}: {self.database_label}: {reason}")

    async def complete(
        self,
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        """completion/complete (see mcp_server.tools.completions), with the request's App."""
        from mcp_server.tools.completions import complete

        app = _LISTING_APP.get()
        if app is None:
            return None
        with self._database_errors():
            return await complete(app, ref, argument, context)

    # MCP prompts come from the database, not the SDK's static registry; both list_prompts and get_prompt
    # read it with the request's App (get_prompt receives it, list_prompts through _LISTING_APP).
    async def list_prompts(self) -> list[Prompt]:
        from mcp_server.services import prompts

        app = _LISTING_APP.get()
        if app is None:  # called outside a prompts/list request: no database to read
            return await super().list_prompts()
        if "prompts" not in app.settings.enabled_toolsets:
            return []
        with self._database_errors():
            async with app.db.unit_of_work(write=False) as session:
                listed = await prompts.listing(session)
        return [
            Prompt(
                name=item.prompt_id,
                title=f"{item.prompt_id} (v{item.version})",
                description=item.description,
                arguments=[
                    PromptArgument(name=name, description=f"Value for {{{{{name}}}}}", required=True)
                    for name in item.placeholders
                ],
            )
            for item in listed
        ]

    async def get_prompt(
        self, name: str, arguments: dict[str, Any] | None = None, context: Context[App, Any] | None = None
    ) -> GetPromptResult | InputRequiredResult:
        from mcp_server.services import prompts

        if context is None or "prompts" not in context.request_context.lifespan_context.settings.enabled_toolsets:
            raise MCPError(code=INVALID_PARAMS, message=f"not_found: no prompt named {name[:200]!r}")
        values = {key: str(value) for key, value in (arguments or {}).items()}
        try:
            with self._database_errors():
                async with context.request_context.lifespan_context.db.unit_of_work(write=False) as session:
                    rendered = await prompts.render(session, name, values)
        except DomainError as exc:
            raise MCPError(code=INVALID_PARAMS, message=f"{exc.code}: {exc.message}") from None
        messages = [PromptMessage(role="user", content=TextContent(text=text)) for text in rendered.messages]
        return GetPromptResult(description=rendered.description, messages=messages)


def build_server(settings: Settings, *, database: Database | None = None) -> PipelineStateServer:
    """The MCP server for these settings. ``database`` lets a caller share an already open one."""

    @asynccontextmanager
    async def lifespan(_: MCPServer[App]) -> AsyncIterator[App]:
        handle = DatabaseHandle(settings, database)
        hub = LiveHub(bus, handle, settings.url)
        async with anyio.create_task_group() as background:
            # The handshake is answered while the database layer loads and the schema is checked.
            background.start_soon(handle.warm)
            background.start_soon(hub.run)  # idle until a client subscribes
            try:
                yield App(db=handle, settings=settings, live=hub)
            finally:
                background.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    await handle.dispose()

    from mcp_server.tools import build_tools, register_resources

    tools, hidden = build_tools(settings)
    bus = InMemorySubscriptionBus()
    server = PipelineStateServer(
        subscriptions=bus,
        name="pipeline-state",
        version=_package_version(),
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        log_level=settings.log_level,
        tools=tools,
        hidden_write_tools=hidden,
        max_running_calls=settings.max_running_calls,
        max_waiting_calls=settings.max_waiting_calls,
        database_label=f"the database at {settings.display_url}",
    )
    register_resources(server, settings)
    _serve_changes(server, settings)
    return server


def _serve_changes(server: PipelineStateServer, settings: Settings) -> None:
    """resources/subscribe where there are resources; the 2025-11-25 handshake's listChanged where this
    server sends it (after its own save_prompt_version, define_process, apply_pipeline, delete_process)."""
    from mcp_server import sdk_gap

    resources = "pipeline" in settings.enabled_toolsets
    if resources:
        sdk_gap.add_request_handler(server, "resources/subscribe", SubscribeRequestParams, _subscribe)
        sdk_gap.add_request_handler(server, "resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe)
    # This server sends log messages (budget alerts), so it serves the level a 2025-11-25 client sets.
    sdk_gap.add_request_handler(server, "logging/setLevel", SetLevelRequestParams, _set_level)
    options = NotificationOptions(
        prompts_changed="save_prompt_version" in server.registered_tools,
        resources_changed=resources and bool(PIPELINE_WRITERS & set(server.registered_tools)),
    )
    sdk_gap.advertise_list_changed(server, options)
