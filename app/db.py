"""The database handle: engine, session factory and the one place that commits.

Nothing is created at import time: the lifespan (or the CLI) builds a Database and disposes it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import TextClause, bindparam, event, func, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from app import sqlite_driver

log = logging.getLogger(__name__)
SessionFactory = async_sessionmaker[AsyncSession]
NOTIFY_CHANNEL = "ci_executor_events"
# session.info key: async callables (session) -> None that `transaction()` runs, in order, just
# before its commit (writes its units deferred to be made together).
BEFORE_COMMIT = "before commit"
# How long a SQLite writer waits for the write lock (the busy timeout), in this process's
# queue as in SQLite's own.
SQLITE_BUSY_SECONDS = 30
# Receives the events a transaction recorded (session.info["events"]) once it has committed.
EventSink = Callable[[list[Any]], None]


# Connections a Postgres pool keeps when no size is given (the service sizes its own from its
# settings, never below this: app/wiring.pool_size).
POSTGRES_POOL = 20


def pool_options(url: str, pool_size: int | None, pool_timeout: float) -> dict[str, Any]:
    """The connection pool: `pool_size` kept and as many again on overflow (default
    POSTGRES_POOL on Postgres; SQLAlchemy's 5 + 10 on SQLite); a checkout waits `pool_timeout`
    s at most."""
    if pool_size is None:
        if url.startswith("sqlite"):
            return {"pool_timeout": pool_timeout}
        pool_size = POSTGRES_POOL
    return {"pool_size": pool_size, "max_overflow": pool_size, "pool_timeout": pool_timeout}


def create_engine(url: str, pool_size: int | None = None, pool_timeout: float = 30) -> AsyncEngine:
    """hide_parameters: a failing statement's exception (and so the service log) never carries
    the bound values, which include variables and secrets."""
    pool = pool_options(url, pool_size, pool_timeout)
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_SECONDS},
            hide_parameters=True,
            module=sqlite_driver.dbapi(),  # one trip to aiosqlite's thread per statement
            **pool,
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


@dataclass(frozen=True)
class DriverStatement:
    """One statement that can also run through the database driver itself, below SQLAlchemy's
    execution layers (`Database.commit_alone`): for a write made on every step, where those
    layers cost more than the statement (on SQLite each transaction took ~10 trips to
    aiosqlite's thread, on Postgres 3 round trips). Written with `:name` parameters, sqlite3's
    own style; asyncpg gets `$n`. `types`: parameters whose values need a column type's
    conversion (a UTC datetime stored as text on SQLite)."""

    sql: str
    types: Mapping[str, TypeEngine[Any]] = field(default_factory=dict)

    @cached_property
    def clause(self) -> TextClause:
        """The same statement for a SQLAlchemy session (inside a larger transaction)."""
        clause = text(self.sql)
        return clause.bindparams(*(bindparam(n, type_=t) for n, t in self.types.items()))

    @cached_property
    def numbered(self) -> tuple[str, tuple[str, ...]]:
        """asyncpg's form: the SQL with `$n`, and the parameter names in order."""
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match.group(1) not in names:
                names.append(match.group(1))
            return f"${names.index(match.group(1)) + 1}"

        return re.sub(r"(?<!:):([A-Za-z_]\w*)", number, self.sql), tuple(names)


def _commit_in_thread(conn: Any, sql: str, params: dict[str, Any]) -> list[Any]:
    """On aiosqlite's connection thread: one statement in a transaction of its own (the
    connection is in autocommit mode, see create_engine; IMMEDIATE as in `_begin`)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(sql, params).fetchall()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return list(rows)


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
                # Writes deferred to the end of the transaction, in order (builds' creates:
                # one INSERT per table for all the transaction's creates).
                for write in session.info.pop(BEFORE_COMMIT, []):
                    await write(session)
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

    async def commit_alone(
        self,
        statement: DriverStatement,
        params: dict[str, Any],
        events: Callable[[list[Any]], list[Any]],
    ) -> list[Any]:
        """Run one statement as a transaction of its own, through the driver: on SQLite one
        trip to the connection's thread (BEGIN IMMEDIATE, the statement, COMMIT), on Postgres
        one round trip (a single statement is its own transaction). Returns its rows; then,
        as `transaction()` does after its commit, publishes `events(rows)` (on Postgres their
        NOTIFY is sent after the commit instead of inside it: both are delivered only once
        the change is committed). A connection that failed is discarded, not pooled."""
        values = dict(params)
        dialect = self.engine.dialect
        for name, type_ in statement.types.items():
            process = type_.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                values[name] = process(values[name])
        async with self._write_turn(), self.engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            try:
                if self.is_sqlite:
                    # aiosqlite's own queue to its thread: one trip for the whole transaction.
                    rows = await driver._execute(
                        _commit_in_thread, driver._conn, statement.sql, values
                    )
                else:
                    sql, names = statement.numbered
                    rows = await driver.fetch(sql, *(values[n] for n in names))
            except BaseException:
                await conn.invalidate()
                raise
            rows = [tuple(row) for row in rows]
            published = events(rows)
            if published and self.notify is not None:
                try:
                    for payload in self.notify(published):
                        await driver.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)
                except Exception:  # committed already: other replicas poll what they missed
                    log.exception("sending NOTIFY after a committed statement failed")
                    await conn.invalidate()
        if published:
            for sink in self.sinks:
                sink(published)
        return rows

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

    def __init__(self, db: Database, max_units: int = 100, lanes: int | None = None) -> None:
        self._db = db
        self._max = max_units
        # Shared transactions in flight at once. SQLite: one (its writes take turns anyway).
        # Postgres: a few, so a unit arriving while one runs starts at once, in parallel, as
        # its own transaction would have; units that arrive while all run wait for the next.
        self._lanes = lanes if lanes is not None else 1 if db.is_sqlite else 4
        self._queue: list[tuple[Unit, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # Lanes draining: counted down as a lane's last step, before anything it settled can
        # run (a done callback would come after: a unit queued by the caller it just failed,
        # as the log writer's retry does, would find every lane still taken and wait forever).
        self._active = 0

    @property
    def waiting(self) -> int:
        """Units queued for the next transaction."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """No transaction of the group running or waiting: a unit now would commit alone."""
        return self._active == 0 and not self._queue

    async def run(self, unit: Unit) -> None:
        """Commit `unit` with whatever else is queued; raises what its transaction raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((unit, done))
        if self._active < self._lanes:
            self._active += 1
            task = asyncio.create_task(self._drain(), name="group commit")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
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
            self._active -= 1

    async def _one(self) -> None:
        units: list[tuple[Unit, asyncio.Future[None]]] = []
        try:
            async with self._db.transaction() as session:
                # Taken once the transaction has its turn: all that arrived while it waited.
                units, self._queue = self._queue[: self._max], self._queue[self._max :]
                for unit, _ in units:  # (none: another lane took them; nothing is written)
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
