"""No secrets in the service's own log (issue 10, item 8): a failing statement's error does not
carry its bound parameters."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.db import Database


async def test_database_errors_do_not_carry_bound_values(database_url: str) -> None:
    secret = "hunter2-very-secret-value"
    db = Database(database_url)
    try:
        with pytest.raises(DBAPIError) as caught:
            async with db.transaction() as session:
                # NOT NULL columns left out: an IntegrityError on both databases.
                await session.exec(  # type: ignore[call-overload]
                    text("INSERT INTO builds (pipeline_id, triggered_by) VALUES (:p, NULL)"),
                    params={"p": secret},
                )
        assert secret not in str(caught.value)
        assert "hidden due to hide_parameters" in str(caught.value)
    finally:
        await db.dispose()
