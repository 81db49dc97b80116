"""Terminal tables (rich) of a pipeline status and a cost summary, from the tools' JSON answers."""

from __future__ import annotations

from typing import Any

from rich.table import Table

GROUP_FIELDS = {"project": "project_id", "process": "process_id", "source": "cost_source"}
NONE = "—"  # a group without that key (e.g. calls linked to no process)


def _key(group: dict[str, Any], key: str) -> str:
    if key == "prompt":
        return f"{group['prompt_id']} v{group['prompt_version']}" if "prompt_id" in group else NONE
    value = group.get(GROUP_FIELDS.get(key, key))
    return NONE if value is None else str(value)


def _usd(row: dict[str, Any], field: str) -> str:
    # Replies leave out a sum whose calls are all unpriced: unknown, which must not read as 0.
    return str(row[field]) if field in row else "unpriced"


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"{status['project_name']} ({status['project_id']})")
    for column in ("process", "state", "version", "run next", "blocked by", "invalidated by"):
        table.add_column(column)
    table.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=48)
    colours = {"completed": "green", "stale": "red", "failed": "red", "running": "yellow", "empty": "dim"}
    for p in status["processes"]:
        table.add_row(
            p["process_id"],
            f"[{colours.get(p['state'], 'white')}]{p['state']}[/]",
            str(p["version"]),
            "yes" if p["can_run"] else "",
            ", ".join(p.get("blocked_by", [])),
            p.get("invalidated_by_process_id", ""),
            p.get("invalidation_reason", ""),
        )
    return table


def cost_table(summary: dict[str, Any], group_by: list[str]) -> Table:
    table = Table(title="LLM cost" + (f" by {', '.join(group_by)}" if group_by else ""))
    columns = [*group_by, "calls", "prompt", "completion", "cache read", "cost (USD)", "rework (USD)", "unpriced"]
    for column in columns:
        table.add_column(column, justify="left" if column in group_by else "right")

    def figures(row: dict[str, Any]) -> list[str]:
        return [
            str(row["calls"]),
            str(row["prompt_tokens"]),
            str(row["completion_tokens"]),
            str(row["cache_read_tokens"]),
            _usd(row, "cost_usd"),
            _usd(row, "superseded_cost_usd"),
            str(row["unpriced_calls"]),
        ]

    for group in summary["groups"]:
        table.add_row(*(_key(group, key) for key in group_by), *figures(group))
    table.add_section()
    table.add_row(*(["total"] + [""] * (len(group_by) - 1) if group_by else []), *figures(summary["totals"]))
    return table
