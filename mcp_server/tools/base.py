"""A toolset is a table of ``ToolEntry`` rows; each row builds its SDK ``Tool`` with annotations and the
portable schemas. Also the per-call helpers every tool uses."""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations

from mcp_server.app import App
from mcp_server.schemas.common import ACTOR_MAX
from mcp_server.schemas.portable import compact_output_schema, portable_input_schema


@dataclass(frozen=True)
class ToolEntry:
    """One tool of a toolset: the function (its name, docstring and signature make the tool) and its hints."""

    fn: Callable[..., Awaitable[Any]]
    title: str
    read_only: bool
    destructive: bool = False
    idempotent: bool = False

    @property
    def name(self) -> str:
        return self.fn.__name__

    def build(self) -> Tool:
        """The SDK tool, with schemas every provider SDK loads (see mcp_server.schemas.portable). Built once
        per entry (the schemas take pydantic a while, and they depend on the entry alone); each server gets
        its own copy."""
        built = _BUILT.get(self)
        if built is None:
            built = _BUILT[self] = self._build()
        return built.model_copy()

    def _build(self) -> Tool:
        tool = Tool.from_function(
            self.fn,
            title=self.title,
            # One paragraph: the docstring's line breaks are layout, and each one costs the model a token.
            description=" ".join(inspect.cleandoc(self.fn.__doc__ or "").split()),
            annotations=ToolAnnotations(
                title=self.title,
                read_only_hint=self.read_only,
                destructive_hint=self.destructive if not self.read_only else False,
                idempotent_hint=self.idempotent or self.read_only,
                open_world_hint=False,
            ),
        )
        # FuncMetadata reads output_schema live (its documented contract), so the copy publishes and
        # validates against the compact one.
        metadata = tool.fn_metadata.model_copy(
            update={"output_schema": compact_output_schema(tool.fn_metadata.output_schema)}
        )
        return tool.model_copy(update={"parameters": portable_input_schema(tool.parameters), "fn_metadata": metadata})


_BUILT: dict[ToolEntry, Tool] = {}


def app_of(ctx: Context[App]) -> App:
    app: App = ctx.request_context.lifespan_context
    return app


def actor_of(ctx: Context[App]) -> str | None:
    """``name/version`` of the MCP client, when it identified itself at initialisation."""
    try:
        params = ctx.session.client_params
    except (AttributeError, RuntimeError):
        return None
    if params is None or params.client_info is None:
        return None
    info = params.client_info
    label = f"{info.name}/{info.version}" if info.version else info.name
    # The client names itself: keep what PostgreSQL can store (no NUL) and what the column holds.
    return label.replace("\x00", "")[:ACTOR_MAX] or None


# The least log level each 2025-11-25 session asked for (logging/setLevel); sessions are dropped with them.
LOG_LEVELS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


async def tell_alerts(ctx: Context[App], budget: Any) -> None:
    """Thresholds a call crossed first (of the budget, a cap, the pipeline's shared budget), as one MCP log
    message (level warning) to the calling client, beside the reply's ``crossed``; a client that does not
    take log messages loses nothing else."""
    if budget is None:
        return
    alerts = []
    if budget.crossed:
        spent = budget.period_spent_usd if budget.period else budget.spent_usd
        alerts.append(
            {"scope": "budget", "crossed": budget.crossed, "limit_usd": str(budget.budget_usd), "spent_usd": str(spent)}
        )
    for cap in budget.caps or ():
        if cap.crossed:
            alerts.append(
                {
                    "scope": f"cap {cap.cap}",
                    "crossed": cap.crossed,
                    "limit_usd": str(cap.cap_usd),
                    "spent_usd": str(cap.spent_usd),
                }
            )
    shared = budget.pipeline
    if shared is not None and shared.crossed:
        alerts.append(
            {
                "scope": f"pipeline {shared.pipeline_id}",
                "crossed": shared.crossed,
                "limit_usd": str(shared.budget_usd),
                "spent_usd": str(shared.spent_usd),
            }
        )
    if not alerts:
        return
    try:
        least = LOG_LEVELS.get(ctx.session)
    except (AttributeError, RuntimeError, TypeError):
        least = None
    if least in _LEVELS and _LEVELS.index(least) > _LEVELS.index("warning"):
        return
    message = {"event": "budget_alert", "alerts": alerts, "crossed": budget.crossed or []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # logging is deprecated by 2026-07-28, still what 2025 clients read
        try:
            await ctx.log("warning", message, logger_name="pipeline-state.budget")
        except Exception:  # noqa: BLE001 - a notice that cannot be sent never fails the call
            return
