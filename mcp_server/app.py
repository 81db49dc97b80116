"""What the lifespan hands every tool call: the database and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from mcp_server.db.engine import Database
from mcp_server.settings import Settings


@dataclass(frozen=True)
class App:
    db: Database
    settings: Settings
