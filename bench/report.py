"""The table on stdout and the raw numbers as JSON."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.harness import ROOT, Figure


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.3g}" if abs(value) < 1 else f"{value:,.2f}"


def table(figures: list[Figure]) -> str:
    header = ("figure", "ours", "floor/ref", "unit", "ratio", "bar", "result")
    rows = [header]
    for f in figures:
        verdict = "—" if f.passed is None else "PASS" if f.passed else "FAIL"
        if "skipped" in f.detail:
            verdict = "SKIP"
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else "—"
        rows.append((f.title, _fmt(f.ours), _fmt(f.reference), f.unit, ratio, f.bar, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return done.stdout.strip() or None


def write_json(
    path: Path, figures: list[Figure], *, mode: str, seconds: float, errors: dict[str, str], load: dict[str, Any]
) -> None:
    payload: dict[str, Any] = {
        "mode": mode,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 1),
        "commit": _commit(),
        "python": platform.python_version(),
        "machine": {"cpus": _cpus(), "platform": platform.platform(), "loadavg": load},
        "figures": {f.key: asdict(f) | {"ratio": f.ratio} for f in figures},
        "errors": errors,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def _cpus() -> int | None:
    import os

    return os.cpu_count()
