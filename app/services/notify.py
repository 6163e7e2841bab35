"""Cross-replica signals over Postgres LISTEN/NOTIFY.

Every committed transaction that recorded events for a build sends one NOTIFY per build (inside the
transaction, so Postgres delivers it only on commit). Other replicas wake their SSE streams for that
build (they then read the new chunks from the database) and act on cancel requests at once. On
SQLite there is one process per database file, so the in-process hub suffices; polling covers the
rest (SSE re-reads every second; the scheduler checks cancel flags every second).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.db import NOTIFY_CHANNEL as CHANNEL
from app.logs.hub import LiveHub, Wakeup
from app.models.schemas import StatusEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CancelRequested:
    """Recorded by a cancel request; other replicas stop the build if they run it."""

    build_id: int


def notify_payloads(events: list[Any], sender: str) -> list[str]:
    """One compact payload per build touched (NOTIFY payloads are limited to 8000 bytes).

    Only what another replica acts on is sent: new log chunks and build status changes (they wake
    its SSE streams, which then read the database) and cancel requests. Job and step changes are
    not: a remote stream learns about them from the database, and skipping them saves a round
    trip on every step transition."""
    kinds: dict[int, str] = {}
    for event in events:
        build_id = getattr(event, "build_id", None)
        if build_id is None:
            continue
        if isinstance(event, StatusEvent) and event.kind != "build":
            continue
        if isinstance(event, CancelRequested) or kinds.get(build_id) == "cancel":
            kinds[build_id] = "cancel"
        else:
            kinds[build_id] = "wake"
    return [json.dumps({"b": b, "k": k, "s": sender}) for b, k in kinds.items()]


class PgListener:
    """Listens on CHANNEL with a dedicated connection and reconnects when it drops."""

    def __init__(
        self,
        dsn: str,
        *,
        sender: str,
        hub: LiveHub,
        on_cancel: Callable[[int], object],
        retry_seconds: float = 1.0,
    ) -> None:
        self._dsn = dsn
        self._sender = sender
        self._hub = hub
        self._on_cancel = on_cancel
        self._retry = retry_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _received(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            build_id = int(message["b"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed notification %r", payload[:200])
            return
        if message.get("s") == self._sender:
            return  # our own events already went through the in-process hub
        if message.get("k") == "cancel":
            self._on_cancel(build_id)
        self._hub.publish(Wakeup(build_id))

    async def _run(self) -> None:
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self._dsn)
                await conn.add_listener(CHANNEL, self._received)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, done=closed: done.set())
                await closed.wait()
                log.warning("LISTEN connection lost; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed (%s); retrying", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(self._retry)


def asyncpg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
