"""The shared test support (tests/support/) does what the suite relies on it for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.support import uvicorn_server, wait_until
from tests.support.backends import enabled_backends


async def test_wait_until_polls_sync_and_async_predicates_and_returns_the_value() -> None:
    calls: list[int] = []

    def sync_third() -> str | None:
        calls.append(1)
        return "done" if len(calls) >= 3 else None

    assert await wait_until(sync_third, interval=0.001) == "done"
    assert len(calls) == 3

    async def async_value() -> int:
        await asyncio.sleep(0)
        return 7

    assert await wait_until(async_value) == 7


async def test_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"waiting for the flag \(last: False\)"):
        await wait_until(lambda: False, "the flag", timeout=0.05, interval=0.01)


async def test_uvicorn_server_serves_the_app() -> None:
    async def hello(_request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/", hello)])
    async with uvicorn_server(app) as url, httpx.AsyncClient() as client:
        assert (await client.get(url)).text == "hi"


async def test_uvicorn_server_fails_fast_with_the_startup_error() -> None:
    @asynccontextmanager
    async def broken(_app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("database is on fire")
        yield  # pragma: no cover

    # A startup timeout far beyond the test's own: only failing fast on the server's error
    # (not waiting for the deadline) lets this test finish.
    with pytest.raises(AssertionError, match="database is on fire"):
        async with uvicorn_server(Starlette(lifespan=broken), lifespan="on", startup_timeout=600):
            pytest.fail("the server must not be reported as started")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sqlite", ["sqlite"]),
        ("postgres", ["postgres"]),
        (" Postgres, sqlite ", ["sqlite", "postgres"]),
    ],
)
def test_test_backends_switch(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("TEST_BACKENDS", value)
    assert enabled_backends() == expected


def test_test_backends_rejects_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_BACKENDS", "sqlite,mysql")
    with pytest.raises(pytest.UsageError, match="mysql"):
        enabled_backends()
