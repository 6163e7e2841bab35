"""The scheduler: takes build ids from the queue, claims them, runs them, keeps their leases.

- Claim: one conditional UPDATE (queued → running, lease owner = this replica), in the same
  transaction as the build's first jobs' start (BuildExecutor.claim). A redelivered or
  duplicated id finds the build no longer queued and is simply acknowledged.
- Leases: every running build's lease is renewed by the replica that runs it. A sweep takes over
  builds whose lease expired (their replica died): runners that can re-attach (Kubernetes) follow
  the work on; the local runner's processes died with their replica, so those jobs end `error`.
- Cancel: the API sets cancel_requested_at and signals this scheduler; other replicas notice the
  flag when they renew their leases.
- Requeue: builds still `queued` long after they were dispatched are published again, so a lost
  publish never loses a build.
- Concurrency groups (app/services/concurrency.py): a build whose group is held is not claimed;
  it stays queued (its message acknowledged) and is published again when the group frees.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, update
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.models import Build, BuildStatus
from app.models.types import utcnow
from app.queue.base import BuildQueue
from app.services import concurrency, state
from app.services.claims import ClaimBatch
from app.services.executor import BuildExecutor
from app.services.handoff import Noted, SpecCache
from app.services.notify import CancelRequested
from app.services.reporting import BuildContext

if TYPE_CHECKING:  # app.wiring builds the Scheduler from its Core
    from app.wiring import Core

log = logging.getLogger(__name__)


def _lease_expired(now: datetime) -> ColumnElement[bool]:
    return or_(col(Build.lease_expires_at).is_(None), col(Build.lease_expires_at) < now)


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Scheduler:
    def __init__(self, core: Core, queue: BuildQueue, *, owner: str | None = None) -> None:
        self.core = core
        self.db = core.db
        self.queue = queue
        self.runner = core.runner
        self.metrics = core.metrics
        self.settings = core.settings
        self.owner = owner or replica_id()
        self._slots = asyncio.Semaphore(core.settings.max_concurrent_builds)
        self._running: dict[int, tuple[BuildContext, asyncio.Task[None]]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self._wakers: set[asyncio.Task[None]] = set()
        # Specs parsed by this replica's creates, for its executors (app/services/handoff.py).
        self.specs = SpecCache()
        self._claims = ClaimBatch(self.db, self._claim_values, self._claimed_together)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    async def start(self) -> None:
        await self.queue.start(self.on_delivery)
        self._loops = [
            asyncio.create_task(self._lease_loop(), name="lease-keeper"),
            asyncio.create_task(self._sweep_loop(), name="lease-sweeper"),
        ]

    async def stop(self) -> None:
        """Stop consuming, let running builds finish within the grace period, then stop them."""
        self._stopping = True
        await self.queue.stop()
        await self._claims.drain()  # what it claims is spawned, so waited for below
        tasks = [task for _, task in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.shutdown_grace_seconds)
        for ctx, task in list(self._running.values()):
            if self.runner.can_reattach:
                # The work goes on in the cluster; stop following it and let the next replica
                # (or this one after a restart) re-attach once the lease is released below.
                ctx.detach = True
                task.cancel()
            else:
                ctx.request_cancel()
        remaining = [task for _, task in self._running.values()]
        if remaining:
            await asyncio.wait(remaining, timeout=self.settings.cancel_grace_seconds + 10)
        for loop in [*self._loops, *self._wakers]:
            loop.cancel()
        await asyncio.gather(*self._loops, *self._wakers, return_exceptions=True)
        # Hand whatever is left to the next replica right away instead of after lease expiry.
        async with self.db.transaction() as session:
            await session.exec(
                update(Build)
                .where(col(Build.lease_owner) == self.owner)
                .values(lease_expires_at=utcnow())
            )

    def cancel(self, build_id: int) -> bool:
        """Signal an in-process cancel; returns whether this replica runs the build."""
        entry = self._running.get(build_id)
        if entry is None:
            return False
        entry[0].request_cancel()
        return True

    def on_events(self, events: list[object]) -> None:
        """A database sink: what committed transactions recorded that this replica acts on
        (a cancel requested from any code path; a concurrency group that changed)."""
        for event in events:
            if isinstance(event, CancelRequested):
                self.cancel(event.build_id)
            elif isinstance(event, concurrency.GroupChanged) and not self._stopping:
                task = asyncio.create_task(self._group_changed(event), name="concurrency wake")
                self._wakers.add(task)
                task.add_done_callback(self._wakers.discard)

    async def _group_changed(self, event: concurrency.GroupChanged) -> None:
        """Wake this replica's executors (they may have jobs waiting for a group), and publish
        the builds queued for it (whichever replica claims one)."""
        for ctx, _ in self._running.values():
            ctx.wake.set()
        try:
            async with self.db.read() as session:
                waiting = await concurrency.queued(session, event.pipeline_id, event.key)
            for build_id in waiting:
                await self.queue.publish(build_id)
        except Exception:
            log.warning("waking concurrency group %r failed", event.key, exc_info=True)

    async def on_delivery(self, build_id: int) -> None:
        if self._stopping:
            raise RuntimeError("scheduler is stopping")  # returned to the queue for another replica
        await self._slots.acquire()
        ctx = self.core.build_context(build_id)
        executor = BuildExecutor(ctx, self.specs)
        noted = self.specs.take(build_id)
        if noted is not None and await self._claim_together(executor, noted):
            return
        try:
            claimed = await executor.claim(functools.partial(self._claim, build_id), noted)
        except BaseException:
            self._slots.release()
            raise
        if not claimed:
            self._slots.release()
            return
        self._spawn(ctx, executor, resume=False)

    async def _claim_together(self, executor: BuildExecutor, noted: Noted) -> bool:
        """A build created here: claimed in the next group commit (app/services/claims.py).
        True when it was claimed there (and its executor spawned); False when the caller is
        to claim it alone. Its slot is given back when the claim fails, also when this
        delivery is cancelled meanwhile (the batch decides either way)."""
        decided = self._claims.submit(executor, noted)
        try:
            return await asyncio.shield(decided)
        except asyncio.CancelledError:
            decided.add_done_callback(self._release_unless_claimed)
            raise
        except BaseException:
            self._slots.release()
            raise

    def _release_unless_claimed(self, decided: asyncio.Future[bool]) -> None:
        if decided.cancelled() or decided.exception() is not None or not decided.result():
            self._slots.release()

    def _claim_values(self) -> dict[str, Any]:
        now = utcnow()
        return {
            "lease_owner": self.owner,
            "lease_expires_at": now + self.lease,
            "waiting_reason": None,
            "started_at": now,
        }

    def _claimed_together(self, executor: BuildExecutor, build: Build) -> None:
        waited = (build.started_at or utcnow()) - build.created_at
        self.metrics.queue_wait.observe(waited.total_seconds())
        self._spawn(executor.ctx, executor, resume=False)

    async def _claim(self, build_id: int, session: AsyncSession) -> Build | None:
        """Inside the executor's first transaction: the build as claimed (running, leased to
        this replica), or None."""
        claimed = self._claim_values()
        # Detached once claimed: the executor's changes to it (secrets put back into its
        # variables) are never flushed.
        build = await state.claim_ungrouped(session, build_id, claimed)
        if build is not None:
            session.expunge(build)
        else:  # in a concurrency group, or not claimable: read it and decide
            build = await self._claim_read(session, build_id, claimed)
            if build is None:
                return None
        self.metrics.queue_wait.observe((claimed["started_at"] - build.created_at).total_seconds())
        return build

    async def _claim_read(
        self, session: AsyncSession, build_id: int, claimed: dict[str, Any]
    ) -> Build | None:
        # Held here, so may_start's get finds it in the session instead of reading it again.
        build = await session.get(Build, build_id)
        if build is not None and not await concurrency.may_start(session, build_id):
            log.info("build %s waits for its concurrency group; acknowledged", build_id)
            return None
        if build is None or not await state.build(
            session, build_id, BuildStatus.running, only_from=[BuildStatus.queued], extra=claimed
        ):
            log.info("build %s not claimable (unknown, cancelled or taken); acknowledged", build_id)
            return None
        # The row as the UPDATE left it, without reading it back: detached first, so setting
        # the values is not itself a change to flush.
        session.expunge(build)
        build.status = BuildStatus.running
        for name, value in claimed.items():
            setattr(build, name, value)
        return build

    def _spawn(self, ctx: BuildContext, executor: BuildExecutor, *, resume: bool) -> None:
        task = asyncio.create_task(
            self._execute(executor, resume=resume), name=f"build {ctx.build_id}"
        )
        self._running[ctx.build_id] = (ctx, task)
        self.metrics.running_builds.inc()

    async def _execute(self, executor: BuildExecutor, *, resume: bool) -> None:
        ctx = executor.ctx
        try:
            await executor.run(resume=resume)
        except Exception as exc:
            log.exception("build %s failed inside the executor", ctx.build_id)
            try:
                async with self.db.transaction() as session:
                    await state.build(
                        session,
                        ctx.build_id,
                        BuildStatus.error,
                        error=f"internal executor error: {type(exc).__name__}",
                    )
            except Exception:
                log.exception("could not record the failure of build %s", ctx.build_id)
        finally:
            self._running.pop(ctx.build_id, None)
            self.metrics.running_builds.dec()
            self._slots.release()

    async def _lease_loop(self) -> None:
        """Renew leases every third of their length; check cancel flags every second (the
        fallback for cancels requested on another replica when there is no NOTIFY)."""
        renew_every = max(0.2, self.settings.lease_seconds / 3)
        tick = min(1.0, renew_every)
        last_renewal = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            try:
                renew = loop.time() - last_renewal >= renew_every
                await self._renew(renew=renew)
                if renew:
                    last_renewal = loop.time()
            except Exception:
                log.exception("lease renewal failed; retrying")

    async def _renew(self, *, renew: bool) -> None:
        ids = list(self._running)
        if not ids:
            return
        lost: set[int] = set()
        async with self.db.transaction() as session:
            if renew:
                renewed = await session.exec(
                    update(Build)
                    .where(col(Build.id).in_(ids), col(Build.lease_owner) == self.owner)
                    .values(lease_expires_at=utcnow() + self.lease)
                    .returning(col(Build.id))
                )
                lost = set(ids) - set(renewed.scalars().all())
            flagged = (
                await session.exec(
                    select(Build.id).where(
                        col(Build.id).in_(ids), col(Build.cancel_requested_at).is_not(None)
                    )
                )
            ).all()
        for build_id in flagged:
            if build_id is not None:
                self.cancel(build_id)
        for build_id in lost:
            self._abandon(build_id)

    def _abandon(self, build_id: int) -> None:
        """Our lease on a build is gone (another replica took it over after we stalled, or an
        operator moved it): stop working on it at once and record nothing, so two replicas never
        run, or write the results of, the same build."""
        entry = self._running.get(build_id)
        if entry is None:
            return
        ctx, task = entry
        log.warning("lost the lease on build %s; stopping our work on it", build_id)
        ctx.detach = True
        task.cancel()

    async def _sweep_loop(self) -> None:
        interval = max(0.2, min(self.settings.lease_seconds / 2, 10.0))
        while True:
            try:
                await self._take_over_expired()
                await self._requeue_stale()
            except Exception:
                log.exception("lease sweep failed; retrying")
            await asyncio.sleep(interval)

    async def _take_over_expired(self) -> None:
        if self._stopping:
            return
        now = utcnow()
        async with self.db.read() as session:
            candidates = (
                await session.exec(
                    select(Build.id)
                    .where(
                        Build.status == BuildStatus.running,
                        _lease_expired(now),
                    )
                    .limit(50)
                )
            ).all()
        for build_id in candidates:
            if build_id is None or build_id in self._running or self._slots.locked():
                continue
            await self._slots.acquire()
            async with self.db.transaction() as session:
                result = await session.exec(
                    update(Build)
                    .where(
                        col(Build.id) == build_id,
                        col(Build.status) == BuildStatus.running,
                        _lease_expired(now),
                    )
                    .values(lease_owner=self.owner, lease_expires_at=utcnow() + self.lease)
                    .returning(col(Build.id))
                )
                taken = result.first() is not None
            if not taken:
                self._slots.release()
                continue
            log.warning("took over build %s after its lease expired", build_id)
            ctx = self.core.build_context(build_id)
            self._spawn(ctx, BuildExecutor(ctx, self.specs), resume=True)

    async def _requeue_stale(self) -> None:
        cutoff = utcnow() - timedelta(seconds=self.settings.requeue_after_seconds)
        async with self.db.read() as session:
            stale = (
                await session.exec(
                    select(Build.id)
                    .where(
                        Build.status == BuildStatus.queued,
                        col(Build.dispatched_at).is_not(None),
                        col(Build.dispatched_at) < cutoff,
                    )
                    .limit(100)
                )
            ).all()
        for build_id in stale:
            if build_id is None:
                continue
            try:
                await self.queue.publish(build_id)
            except Exception:
                log.warning("re-publishing build %s failed; will retry", build_id, exc_info=True)
                return
            async with self.db.transaction() as session:
                await session.exec(
                    update(Build).where(col(Build.id) == build_id).values(dispatched_at=utcnow())
                )
            log.info("re-published build %s, still queued after its dispatch", build_id)
