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


# The bars the SQLite path is held to (latency, tail, shared file, reads during a long write, WAL size),
# summed up under the table.
KEY_BARS = (
    "record_p50",
    "record_p99",
    "throughput_sqlite",
    "read_during_apply_sqlite",
    "read_during_apply_postgres",
    "read_during_import_sqlite",
    "read_during_import_postgres",
    "wal_bound",
)


def summary(figures: list[Figure]) -> str:
    """One line per key bar, in the same run: the ratio or bound and the verdict."""
    by_key = {f.key: f for f in figures}
    rows = []
    for key in KEY_BARS:
        f = by_key.get(key)
        if f is None:
            continue
        verdict = "SKIP" if "skipped" in f.detail else "—" if f.passed is None else "PASS" if f.passed else "FAIL"
        ratio = f"{f.ratio:.2f}×" if f.ratio is not None else "—"
        rows.append((key, f"{_fmt(f.ours)} vs {_fmt(f.reference)} {f.unit}", ratio, f.bar, verdict))
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    return "\n".join(["key bars, this run:", *lines])


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
