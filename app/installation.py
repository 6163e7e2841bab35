"""The database's installation id (see app.models.installation)."""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select

from app.db import Database
from app.models.installation import Installation

log = logging.getLogger(__name__)


async def read_installation_id(db: Database) -> str | None:
    """The id made by the migrations, or None if the schema predates it."""
    try:
        async with db.readers() as session:
            row = (
                await session.exec(select(Installation.value).where(Installation.key == "id"))
            ).one_or_none()
    except SQLAlchemyError as exc:
        log.warning("no installation id in the database (%s); is it migrated?", exc)
        return None
    return str(row) if row else None
