"""A project's pipeline as a Mermaid flowchart: one node per step (id, state, version), an edge per
dependency, one class per state; stale nodes name their root cause, and a completed step whose required
checks are missing or failed says which (docs/design.md, "Checks") and is drawn with the `held` class.
Pure: built from the loaded pipeline (its checks read)."""

from __future__ import annotations

from mcp_server.enums import StateName
from mcp_server.services.pipeline_state import ProjectPipeline

MAX_NODES = 300  # beyond this a picture helps nobody (and renderers give up); the rest are counted
STYLES = {
    StateName.COMPLETED: "fill:#dcfce7,stroke:#16a34a,color:#14532d",
    StateName.STALE: "fill:#fee2e2,stroke:#dc2626,color:#7f1d1d",
    StateName.FAILED: "fill:#ffedd5,stroke:#ea580c,color:#7c2d12",
    StateName.RUNNING: "fill:#dbeafe,stroke:#2563eb,color:#1e3a8a",
    StateName.EMPTY: "fill:#f3f4f6,stroke:#9ca3af,color:#374151",
}
HELD = "stroke:#dc2626,stroke-width:3px,stroke-dasharray:5 3"  # a step whose checks hold its dependants


def _label(text: str) -> str:
    """Text safe inside a quoted Mermaid label."""
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def mermaid(pipeline: ProjectPipeline) -> str:
    order = pipeline.order
    drawn = order[:MAX_NODES]
    node = {pid: f"n{index}" for index, pid in enumerate(drawn)}
    lines = ["flowchart TD"]
    for state, style in STYLES.items():
        lines.append(f"    classDef {state.value} {style}")
    holds = pipeline.verdicts()
    if holds:
        lines.append(f"    classDef held {HELD}")
    for pid in drawn:
        state = pipeline.state(pid)
        parts = [pid, f"{state.value} · v{pipeline.version(pid)}"]
        row = pipeline.rows.get(pid)
        if state == StateName.STALE and row is not None and row.invalidated_by_process_id:
            cause = row.invalidated_by_process_id
            parts.append("cause: itself" if cause == pid else f"cause: {cause}")
        if held := holds.get(pid):
            parts += [f"✗ {name}" for name, _ in held.failed] + [f"… {name}" for name in held.missing]
        label = "<br/>".join(_label(part) for part in parts)
        lines.append(f'    {node[pid]}["{label}"]:::{state.value}')
    marked = [node[pid] for pid in drawn if pid in holds]
    if marked:
        lines.append(f"    class {','.join(marked)} held")
    for pid in drawn:
        for dep in pipeline.definitions[pid].depends_on:
            if dep in node:
                lines.append(f"    {node[dep]} --> {node[pid]}")
    if len(order) > MAX_NODES:
        lines.append(f"    %% {len(order) - MAX_NODES} more steps not drawn (get_pipeline_status lists them)")
    return "\n".join(lines) + "\n"
