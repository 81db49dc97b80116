"""``pipeline-state-mcp db backup FILE``: a consistent copy of the database while servers write.

SQLite: the online backup API, in one step, from a read transaction: in WAL mode that is a snapshot
that writers do not wait for, so the copy is consistent at one moment however busy the servers are.
The copy is written beside FILE and renamed into place only once it passes ``PRAGMA integrity_check``.
PostgreSQL: ``pg_dump`` is the tool for it; the command is printed with the password masked.
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from mcp_server.settings import Settings, mask_url


def backup(settings: Settings, target: Path, *, force: bool = False) -> int:
    url = make_url(settings.url)
    if url.get_backend_name() != "sqlite":
        command = ["pg_dump", "--format=custom", f"--file={target}", mask_url(settings.url)]
        sys.stderr.write(
            "pipeline-state-mcp: a PostgreSQL database is backed up with pg_dump (a consistent snapshot while "
            "servers write); put the password back in place of *** or use PGPASSWORD:\n"
        )
        sys.stdout.write(shlex.join(command) + "\n")
        return 2
    source = Path(url.database or "")
    if not source.is_file():
        sys.stderr.write(f"pipeline-state-mcp: no database file at {source}\n")
        return 1
    if target.exists() and not force:
        sys.stderr.write(f"pipeline-state-mcp: {target} exists; pass --force to replace it\n")
        return 1
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(source, timeout=30)  # the backup only reads it
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: one step, one snapshot
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            dst.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
        finally:
            dst.close()
    finally:
        src.close()
    if check != "ok":
        partial.unlink(missing_ok=True)
        sys.stderr.write(f"pipeline-state-mcp: the copy failed its integrity check ({check}); nothing was written\n")
        return 1
    os.replace(partial, target)
    size = target.stat().st_size
    sys.stdout.write(f"backed up {source} to {target} ({size / 1_048_576:.1f} MiB, integrity ok)\n")
    return 0
