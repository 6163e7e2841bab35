"""Fixtures for the hostile-input and hostile-build suite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

WRITE_TOKEN = "w-sEcr3t-7f2c9a1d5e"
READ_TOKEN = "r-sEcr3t-0b8e4d2a6c"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"api_tokens": f"ci:{WRITE_TOKEN}:write,ui:{READ_TOKEN}:read"}


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI, authenticated with the write token."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://test/api/v1",
        headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
    ) as c:
        yield c
