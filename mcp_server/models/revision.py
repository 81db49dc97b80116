"""Revision: a change token for something servers keep in memory (a pipeline's catalogue, the prices)."""

from __future__ import annotations

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import Base


class Revision(Base):
    __tablename__ = "revisions"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    token: Mapped[str] = mapped_column(String(32), nullable=False)
