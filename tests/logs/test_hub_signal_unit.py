"""The subscriber's wake-up signal (app/logs/hub.py `Signal`): an Event for one waiter."""

from __future__ import annotations

import asyncio

import pytest

from app.logs.hub import Signal


async def test_set_before_wait_returns_at_once_until_cleared() -> None:
    signal = Signal()
    signal.set()
    await asyncio.wait_for(signal.wait(), 5)
    assert signal.is_set()
    signal.clear()
    assert not signal.is_set()
    waiter = asyncio.create_task(signal.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_set_wakes_the_waiter_and_a_timeout_leaves_none_behind() -> None:
    signal = Signal()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await signal.wait()
    waiter = asyncio.create_task(signal.wait())  # a new waiter is allowed after the timeout
    await asyncio.sleep(0)
    signal.set()
    await asyncio.wait_for(waiter, 5)
    signal.set()  # setting with nobody waiting (twice) is harmless
    await asyncio.wait_for(signal.wait(), 5)


async def test_a_second_waiter_is_refused() -> None:
    signal = Signal()
    first = asyncio.create_task(signal.wait())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await signal.wait()
    signal.set()
    await asyncio.wait_for(first, 5)
