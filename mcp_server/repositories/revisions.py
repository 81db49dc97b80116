"""Change tokens (see the ``revisions`` table): written by whoever changes a cached thing, read to check a copy."""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy import ScalarSelect, select
from sqlalchemy.dialects import postgresql, sqlite

from mcp_server.models import Revision
from mcp_server.repositories.base import Repository

PRICES = "prices"
CATALOGUE_PREFIX = "catalogue:"


def catalogue(pipeline_id: str) -> str:
    """The token name of a pipeline's catalogue (its process definitions)."""
    return f"{CATALOGUE_PREFIX}{pipeline_id}"


def token_of(name: str) -> ScalarSelect[str]:
    """The token as a scalar subquery, to read along with another row in the same statement."""
    return select(Revision.token).where(Revision.name == name).scalar_subquery()


class RevisionRepository(Repository):
    async def bump(self, names: Iterable[str]) -> None:
        """A new random token for each name, in this transaction: every copy made from the old one is stale."""
        rows = [{"name": name, "token": secrets.token_hex(16)} for name in sorted(set(names))]
        if not rows:
            return
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(Revision).values(rows)
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=[Revision.name], set_={"token": statement.excluded.token})
        )
