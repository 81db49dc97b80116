"""Terminal tables (rich) of a pipeline status and a cost summary, from the tools' JSON answers.

Every name and reason in them was written by an agent: it goes in as a rich ``Text`` (never parsed as
markup, so ``[/]`` is just two characters) with its control characters spelled out (``visible``), so no
escape sequence an agent stored ever reaches the terminal.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

GROUP_FIELDS = {"project": "project_id", "process": "process_id", "source": "cost_source"}
NONE = "—"  # a group without that key (e.g. calls linked to no process)

# C0 (ESC starts CSI and OSC sequences, BEL ends OSC), DEL and C1 (U+009B is CSI on its own), the
# bidirectional overrides and isolates (text that reads differently from what it is), line separators.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0)]
_FORMATS = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]
_SHOWN: dict[int, str] = {code: f"\\x{code:02x}" for code in _CONTROLS} | {code: f"\\u{code:04x}" for code in _FORMATS}
INVISIBLE: tuple[int, ...] = (*_CONTROLS, *_FORMATS)


def visible(value: object, *, keep: str = "") -> str:
    """``value`` as text with every control character shown as ``\\x1b`` or ``\\u202e`` instead of sent;
    the characters in ``keep`` (e.g. a newline) stay."""
    table = {code: shown for code, shown in _SHOWN.items() if chr(code) not in keep} if keep else _SHOWN
    return str(value).translate(table)


def text(value: object, style: str = "") -> Text:
    """Agent text for a rich cell or line: no markup, no emoji codes, no control characters."""
    return Text(visible(value), style=style)


def line(*parts: object) -> Text:
    """A line of the program's own words (str, already safe) and agent text (Text from ``text``)."""
    return Text.assemble(*(part if isinstance(part, Text) else str(part) for part in parts))


def _key(group: dict[str, Any], key: str) -> Text:
    if key == "prompt":
        return text(f"{group['prompt_id']} v{group['prompt_version']}" if "prompt_id" in group else NONE)
    value = group.get(GROUP_FIELDS.get(key, key))
    return text(NONE if value is None else value)


def _usd(row: dict[str, Any], field: str) -> str:
    # Replies leave out a sum whose calls are all unpriced: unknown, which must not read as 0.
    return visible(row[field]) if field in row else "unpriced"


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title=text(f"{status['project_name']} ({status['project_id']})"))
    for column in ("process", "state", "version", "run next", "held by (lease until)", "blocked by", "invalidated by"):
        table.add_column(column)
    table.add_column("reason", no_wrap=True, overflow="ellipsis", max_width=48)
    colours = {"completed": "green", "stale": "red", "failed": "red", "running": "yellow", "empty": "dim"}
    for p in status["processes"]:
        table.add_row(
            text(p["process_id"]),
            text(p["state"], style=colours.get(p["state"], "white")),
            text(p["version"]),
            "yes" if p["can_run"] else "",
            _holder(p),
            text(", ".join(p.get("blocked_by", []))),
            text(p.get("invalidated_by_process_id", "")),
            text(p.get("invalidation_reason", "")),
        )
    return table


def _holder(row: dict[str, Any]) -> Text:
    """A running step's holder and lease; a lease that passed reads `expired` (the step is claimable);
    a step backing off or given up says so."""
    if row.get("gave_up"):
        return text("gave up (max_attempts)", style="red")
    if row.get("retry_at"):
        return text(f"retry after {row['retry_at']}", style="dim")
    if not row.get("execution_id"):
        return text("")
    lease = row.get("lease_expires_at") or "no lease"
    expired = row.get("lease_expires_at") is not None and row["can_run"]
    who = f"{row.get('started_by') or '?'} #{row.get('attempt') or 1}"
    return text(f"{who} (expired {lease})" if expired else f"{who} ({lease})", style="red" if expired else "yellow")


def cost_table(summary: dict[str, Any], group_by: list[str]) -> Table:
    table = Table(title="LLM cost" + (f" by {', '.join(group_by)}" if group_by else ""))
    columns = [*group_by, "calls", "prompt", "completion", "cache read", "cost (USD)", "rework (USD)", "unpriced"]
    for column in columns:
        table.add_column(column, justify="left" if column in group_by else "right")

    def figures(row: dict[str, Any]) -> list[Text]:
        return [
            text(row["calls"]),
            text(row["prompt_tokens"]),
            text(row["completion_tokens"]),
            text(row["cache_read_tokens"]),
            text(_usd(row, "cost_usd")),
            text(_usd(row, "superseded_cost_usd")),
            text(row["unpriced_calls"]),
        ]

    for group in summary["groups"]:
        table.add_row(*(_key(group, key) for key in group_by), *figures(group))
    table.add_section()
    table.add_row(*(["total"] + [""] * (len(group_by) - 1) if group_by else []), *figures(summary["totals"]))
    return table
