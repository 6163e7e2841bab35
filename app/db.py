"""The database handle: engine, session factory and the one place that commits.

Nothing is created at import time: the lifespan (or the CLI) builds a Database and disposes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, func
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

SessionFactory = async_sessionmaker[AsyncSession]
NOTIFY_CHANNEL = "ci_executor_events"
# How long a SQLite writer waits for the write lock (the busy timeout), in this process's
# queue as in SQLite's own.
SQLITE_BUSY_SECONDS = 30
# Receives the events a transaction recorded (session.info["events"]) once it has committed.
EventSink = Callable[[list[Any]], None]


def pool_options(url: str, pool_size: int | None, pool_timeout: float) -> dict[str, Any]:
    """The connection pool: `pool_size` kept and as many again on overflow (default 20 on
    Postgres; SQLAlchemy's 5 + 10 on SQLite); a checkout waits `pool_timeout` s at most."""
    if pool_size is None:
        if url.startswith("sqlite"):
            return {"pool_timeout": pool_timeout}
        pool_size = 20
    return {"pool_size": pool_size, "max_overflow": pool_size, "pool_timeout": pool_timeout}


def create_engine(url: str, pool_size: int | None = None, pool_timeout: float = 30) -> AsyncEngine:
    """hide_parameters: a failing statement's exception (and so the service log) never carries
    the bound values, which include variables and secrets."""
    pool = pool_options(url, pool_size, pool_timeout)
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_SECONDS}, hide_parameters=True, **pool
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Hand transaction control to SQLAlchemy so the "begin" hook below decides the mode.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            # WAL lets readers (SSE, API) run beside the writer; the busy timeout makes
            # concurrent writers wait instead of failing with "database is locked".
            # WAL persists in the file (`migrate` sets it); switching modes needs an exclusive
            # lock, so only ever try when the file is not in WAL mode yet.
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        # SQLite takes the write lock lazily, so two read-then-write transactions can deadlock
        # (SQLITE_BUSY without waiting). BEGIN IMMEDIATE takes it up front and the busy timeout
        # queues writers instead.
        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            readonly = conn.get_execution_options().get("ci_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    # No pre-ping (a round trip per checkout): a connection broken by a database restart fails
    # one statement, SQLAlchemy then discards the pool's connections and the next one reconnects.
    return create_async_engine(url, pool_recycle=1800, hide_parameters=True, **pool)


class Database:
    """Engine + sessions. `transaction()` is the unit of work: commit, then publish events."""

    def __init__(self, url: str, pool_size: int | None = None, pool_timeout: float = 30) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size, pool_timeout)
        self.sessions: SessionFactory = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )
        # Read-only sessions: on SQLite a deferred BEGIN (no write lock), on Postgres autocommit
        # (no BEGIN/ROLLBACK round trips around every read).
        reader_options: dict[str, Any] = {"ci_readonly": True}
        if not url.startswith("sqlite"):
            reader_options["isolation_level"] = "AUTOCOMMIT"
        self.readers: SessionFactory = async_sessionmaker(
            self.engine.execution_options(**reader_options),
            class_=AsyncSession,
            expire_on_commit=False,
        )
        self.sinks: list[EventSink] = []
        # SQLite has one writer at a time: this replica's write transactions queue here, in
        # order, instead of in SQLite's busy handler (which sleeps up to 100 ms between
        # retries, so under a burst of writers most of the wait was sleep). Other processes
        # on the same file still meet the busy timeout.
        self._writer = asyncio.Lock() if url.startswith("sqlite") else None
        self.writers_waiting = 0  # SQLite: write transactions waiting for their turn here
        # Set on Postgres to turn a transaction's events into NOTIFY payloads (cross-replica).
        self.notify: Callable[[list[Any]], list[str]] | None = None

    @property
    def pool_capacity(self) -> int:
        """How many connections the pool opens at most (kept + overflow)."""
        pool: Any = self.engine.pool
        return int(pool.size()) + int(getattr(pool, "_max_overflow", 0))

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with self._write_turn(), self.sessions() as session:
            try:
                yield session
                pending = session.info.get("events")
                if pending and self.notify is not None:
                    # One statement, one round trip, for all (a group commit touches many
                    # builds, one payload each).
                    calls = [func.pg_notify(NOTIFY_CHANNEL, p) for p in self.notify(pending)]
                    if calls:
                        await session.exec(select(*calls))
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
            events: list[Any] = session.info.pop("events", [])
        # Side effects only after the commit succeeded: subscribers never see a state that
        # could still roll back.
        if events:
            for sink in self.sinks:
                sink(events)

    @asynccontextmanager
    async def _write_turn(self) -> AsyncIterator[None]:
        """SQLite: this process's turn to write, in order, given up after the busy timeout as
        SQLite's own wait would be ("database is locked")."""
        if self._writer is None:
            yield
            return
        self.writers_waiting += 1
        try:
            async with asyncio.timeout(SQLITE_BUSY_SECONDS):
                await self._writer.acquire()
        except TimeoutError:
            raise TimeoutError(
                f"database is locked: no write turn within {SQLITE_BUSY_SECONDS} s"
            ) from None
        finally:
            self.writers_waiting -= 1
        try:
            yield
        finally:
            self._writer.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A short read-only session (no commit); on SQLite it does not take the write lock."""
        async with self.readers() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


Unit = Callable[[AsyncSession], Awaitable[None]]


class GroupCommit:
    """Group commit: units of work from different callers that arrive while a transaction of
    this group waits for its turn (SQLite's write lock) or runs are committed together in the
    next one, so a burst of small writes (many builds' step starts at once) costs a few
    transactions, each holding the write lock once, instead of one each. A unit is what the
    caller's own transaction would have run; if the shared transaction fails, each unit runs
    again alone, so one unit's failure (its data refused) is never another's."""

    def __init__(self, db: Database, max_units: int = 100) -> None:
        self._db = db
        self._max = max_units
        self._queue: list[tuple[Unit, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self, unit: Unit) -> None:
        """Commit `unit` with whatever else is queued; raises what its transaction raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((unit, done))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="group commit")
        await done

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._one()
        except BaseException:
            for _, done in self._queue:
                done.cancel()
            self._queue = []
            raise
        finally:
            self._task = None

    async def _one(self) -> None:
        units: list[tuple[Unit, asyncio.Future[None]]] = []
        try:
            async with self._db.transaction() as session:
                # Taken once the transaction has its turn: all that arrived while it waited.
                units, self._queue = self._queue[: self._max], self._queue[self._max :]
                for unit, _ in units:
                    await unit(session)
        except Exception as error:
            if len(units) == 1:
                _settle(units[0][1], error)
                return
            for unit, done in units:  # alone: one unit's failure is not the others'
                try:
                    async with self._db.transaction() as session:
                        await unit(session)
                except Exception as alone:
                    _settle(done, alone)
                else:
                    _settle(done, None)
            return
        except BaseException:
            for _, done in units:
                done.cancel()
            raise
        for _, done in units:
            _settle(done, None)


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # its caller was cancelled meanwhile
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def record_event(session: AsyncSession, event_: Any) -> None:
    """Queue an event to publish once this session's transaction commits."""
    session.info.setdefault("events", []).append(event_)
