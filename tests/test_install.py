"""A non-editable install of the wheel can migrate its own database: the migrations ship."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from mcp_server.db.migrate import SCHEMA_HEAD

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_installed_wheel_runs_db_upgrade(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("pipeline_state_mcp-*.whl")
    # The dashboard's page ships inside the wheel: it loads nothing from anywhere else.
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"mcp_server/ui/static/{name}" for name in ("index.html", "app.js", "app.css")} <= shipped
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300
    )
    # The dependencies come from this environment's site-packages, as a plain path (its .pth
    # files, including any editable install of this project, are not processed).
    purelib = Path(sysconfig.get_paths()["purelib"])
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(f"{purelib}\n")
    database = tmp_path / "data" / "state.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_STATE_")}
    env["PIPELINE_STATE_DATABASE_URL"] = f"sqlite:///{database}"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = subprocess.run(
        [str(venv / "bin" / "pipeline-state-mcp"), "db", "upgrade"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Running upgrade" in result.stderr
    located = subprocess.run(
        [str(python), "-c", "import mcp_server.db.migrate as m; print(m.migrations_dir())"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert located.startswith(str(site)) and located.endswith("_migrations")
    current = subprocess.run(
        [str(venv / "bin" / "pipeline-state-mcp"), "db", "current"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"{SCHEMA_HEAD} (head)" in current.stdout
    assert database.is_file()
