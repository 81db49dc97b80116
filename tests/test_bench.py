"""The benchmark runs end to end in quick mode and reports every figure of bench/README.md.

Timings are never asserted: only that each figure was measured and written to the JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import FIGURE_KEYS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_benchmark_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out), "--work", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "quick"
    assert report["errors"] == {}
    assert set(FIGURE_KEYS) <= set(report["figures"])
    for key in FIGURE_KEYS:
        figure = report["figures"][key]
        if "skipped" in figure["detail"]:  # PostgreSQL not reachable: the reason is recorded
            continue
        assert figure["ours"] is not None, key
        assert figure["reference"] is not None, key
    assert "figure" in done.stdout and "ratio" in done.stdout  # the table was printed
