"""ProcessDefinition: one step of the pipeline catalogue (one catalogue per database)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mcp_server.db.base import AuditMixin, Base
from mcp_server.db.types import ArrayType, JSONType

PROCESS_ID_LENGTH = 100


class ProcessDefinition(AuditMixin, Base):
    __tablename__ = "process_definitions"

    id: Mapped[str] = mapped_column(String(PROCESS_ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str | None] = mapped_column(Text())
    order_index: Mapped[int] = mapped_column(Integer(), default=0, nullable=False)
    input_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType())
    output_schema: Mapped[dict[str, Any] | None] = mapped_column(JSONType())
    depends_on: Mapped[list[str]] = mapped_column(ArrayType(String(PROCESS_ID_LENGTH)), default=list, nullable=False)

    def __repr__(self) -> str:
        return f"<ProcessDefinition id={self.id!r}>"
