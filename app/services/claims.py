"""Group commit of claims: builds created on this replica, claimed together.

A burst of creates hands the scheduler many builds at once. Claimed one transaction each, their
claims queue behind one another (on SQLite for the one write lock, behind every create still
waiting for it) and each costs its own BEGIN, UPDATEs and COMMIT on the one event loop. Here the
claims waiting at the moment a transaction begins are taken together: one conditional
`UPDATE builds … WHERE id IN (…) RETURNING` claims them, one `UPDATE build_jobs` starts their
first jobs, one commit. Only builds noted by this replica's create (every job pending, the spec
at hand: app/services/handoff.py) come here; a build the batch does not claim (a concurrency
group, no longer queued) goes back to its caller, which claims it alone as before. Each claim is
still the state machine's conditional transition (app/services/state.py), so a build is never
claimed twice, and a claim's effects (its executor spawned) follow the commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.db import Database
from app.models import Build
from app.services import state
from app.services.executor import BuildExecutor
from app.services.handoff import Noted

log = logging.getLogger(__name__)

# Claims per transaction at most (a bound on the statements' IN lists).
MAX_BATCH = 100


@dataclass
class _Waiting:
    executor: BuildExecutor
    noted: Noted
    decided: asyncio.Future[bool]


class ClaimBatch:
    """`submit` a claim; its future is True once the batch claimed the build and `spawn` was
    called with its executor, False when the batch did not claim it (the caller claims it
    alone), or raises what the batch's transaction raised (nothing was claimed)."""

    def __init__(
        self,
        db: Database,
        values: Callable[[], dict[str, Any]],
        spawn: Callable[[BuildExecutor, Build], None],
    ) -> None:
        self._db = db
        self._values = values  # the claim's column values (lease owner, expiry, started_at)
        self._spawn = spawn
        self._pending: list[_Waiting] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, executor: BuildExecutor, noted: Noted) -> asyncio.Future[bool]:
        decided: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Waiting(executor, noted, decided))
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="claim batch")
        return decided

    async def drain(self) -> None:
        """Wait for the batch in progress (its claimed builds spawned) and those queued."""
        if self._task is not None:
            await asyncio.wait({self._task})

    async def _run(self) -> None:
        try:
            while self._pending:
                await self._one()
        except BaseException:
            for w in self._pending:  # never taken: nothing claimed for them
                w.decided.cancel()
            self._pending = []
            raise
        finally:
            self._task = None

    async def _one(self) -> None:
        batch: list[_Waiting] = []
        claimed: dict[int, Build] = {}
        started: dict[int, list[str]] = {}
        try:
            async with self._db.transaction() as session:
                # Taken once the transaction holds its turn (SQLite's write lock): every claim
                # that arrived while it waited goes in.
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                ids = [w.executor.ctx.build_id for w in batch]
                for build in await state.claim_ungrouped_many(session, ids, self._values()):
                    # Detached: the executor's changes to it (secrets put back into its
                    # variables) are never flushed.
                    session.expunge(build)
                    assert build.id is not None
                    claimed[build.id] = build
                wanted: list[tuple[int, str]] = []
                loaded: set[int] = set()
                for w in batch:
                    build_id = w.executor.ctx.build_id
                    if build_id in claimed and build_id not in loaded:
                        loaded.add(build_id)
                        spec, pins = w.noted.spec, w.noted.actions
                        names = w.executor.claimed(claimed[build_id], pins, None, spec)
                        wanted.extend((build_id, name) for name in names)
                moved = await state.start_jobs(session, wanted)
                for build_id, name in wanted:
                    if (build_id, name) in moved:
                        started.setdefault(build_id, []).append(name)
        except BaseException as exc:
            for w in batch:
                if w.decided.done():
                    continue
                if isinstance(exc, Exception):
                    w.decided.set_exception(exc)
                else:
                    w.decided.cancel()  # the batch itself was cancelled: nothing committed
            if not isinstance(exc, Exception):
                raise
            log.warning("claiming %d build(s) together failed", len(batch), exc_info=True)
            return
        # After the commit: each claimed build's executor runs, in the order they came. An id
        # delivered twice into one batch was claimed once: its first delivery runs it.
        for w in batch:
            build_id = w.executor.ctx.build_id
            mine = claimed.pop(build_id, None)
            if mine is not None:
                w.executor.started(started.get(build_id, []))
                self._spawn(w.executor, mine)
            if not w.decided.done():
                w.decided.set_result(mine is not None)
