"""Log reads and API appends (the storage itself is app/logs/store.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import Database
from app.errors import Conflict, Invalid
from app.logs import store
from app.logs.masking import MASK, MIN_SECRET_LENGTH, Masker
from app.models import Build, BuildStatus, LogAppend, LogChunkPublic, LogPage
from app.secrets import SecretBox, secret_values
from app.services.builds import get_build

# A page holds at most this much (JSON-escaped worst case), however many chunks `limit` allows:
# 1,000 chunks of 64 KiB would otherwise be 64 MB (and 6x that escaped) in memory per request.
PAGE_MAX_BYTES = 4 * 1024 * 1024


def _secret_pattern(secrets: list[str]) -> re.Pattern[str] | None:
    """The build's secret values (line by line, as the Masker takes them), longest first."""
    values = {
        line.strip("\r")
        for secret in secrets
        for line in secret.split("\n")
        if len(line.strip("\r")) >= MIN_SECRET_LENGTH
    }
    if not values:
        return None
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))


async def _mask_across(
    session: AsyncSession, build: Build, body: LogAppend, content: str, secrets: list[str]
) -> str:
    """Mask a secret split across this append and the previous one of the same job/step.

    Appends are stored as they come, so the previous chunk may end with the first part of a
    secret whose rest starts this one. The previous chunk's unfinished last line is joined to
    this content's first line; a secret found across the join is replaced by *** in both (the
    earlier chunk is rewritten in place: its stored content must not keep the secret's head)."""
    pattern = _secret_pattern(secrets)
    if pattern is None or build.last_log_seq < 1:
        return content
    prev = await store.chunk_at(session, build.id or 0, build.last_log_seq)
    if prev is None or (prev.job_name, prev.step_index) != (body.job_name, body.step_index):
        return content
    tail = prev.content[prev.content.rfind("\n") + 1 :]
    if not tail:
        return content
    head_end = content.find("\n")
    line = tail + (content if head_end < 0 else content[:head_end])
    for match in pattern.finditer(line):
        start, end = match.span()
        if start < len(tail) < end:
            kept = prev.content[: len(prev.content) - len(tail) + start]
            await store.replace_content(session, prev, kept + MASK)
            return content[end - len(tail) :]
    return content


def _same_content(stored: str, masked: str) -> bool:
    """A repeat of an append matches what is stored, also when the stored chunk's last line was
    later cut at a secret that continued in the next append (see _mask_across)."""
    if stored == masked:
        return True
    if not stored.endswith(MASK):
        return False
    kept = stored[: -len(MASK)]
    return masked.startswith(kept) and "\n" not in masked[len(kept) :]


async def append(
    session: AsyncSession, build_id: int, body: LogAppend, box: SecretBox | None = None
) -> tuple[LogChunkPublic, bool]:
    """AppendBuildLogs. Returns the chunk and whether it was created (False: an idempotent
    repeat). A different content at an existing seq, a seq that would leave a gap, or a new
    chunk for a finished build is 409."""
    if body.job_name is not None and store.storable(body.job_name) != body.job_name:
        raise Invalid("job_name must not contain NUL characters or lone surrogates")
    build = await get_build(session, build_id)
    secrets = secret_values(box, build)  # sealed secrets too (app/secrets.py)
    masker = Masker(secrets)
    content = store.storable(masker.mask_text(body.content))
    if body.seq is not None:
        existing = await store.chunk_at(session, build_id, body.seq)
        if existing is not None:
            same = _same_content(existing.content, content) and (
                existing.job_name,
                existing.step_index,
            ) == (body.job_name, body.step_index)
            if not same:
                raise Conflict(f"seq {body.seq} of build {build_id} holds different content")
            return LogChunkPublic.model_validate(existing), False
    if BuildStatus(build.status).finished:
        raise Conflict(f"build {build_id} is finished ({build.status}): its log is closed")
    if body.seq is not None and body.seq != build.last_log_seq + 1:
        raise Conflict(
            f"seq {body.seq} would leave a gap: the next seq of build {build_id} is "
            f"{build.last_log_seq + 1}"
        )
    content = await _mask_across(session, build, body, content, secrets)
    [chunk] = await store.insert_chunks(
        session, build_id, [(body.job_name, body.step_index, content)]
    )
    if body.seq is not None and chunk.seq != body.seq:
        # Someone appended concurrently; the transaction rolls back and the caller may retry.
        raise Conflict(f"seq {body.seq} of build {build_id} was taken concurrently; retry")
    await session.refresh(build, ["status"])
    if BuildStatus(build.status).finished:
        # The build finished while we appended (the seq UPDATE waited on its row lock).
        raise Conflict(f"build {build_id} is finished ({build.status}): its log is closed")
    return chunk, True


async def page(
    session: AsyncSession,
    build_id: int,
    *,
    offset: int,
    limit: int,
    job: str | None,
    step: int | None,
    max_bytes: int = PAGE_MAX_BYTES,
) -> LogPage:
    build = await get_build(session, build_id)
    finished = BuildStatus(build.status).finished
    items, cut = await store.chunks_page(
        session, build_id, offset=offset, limit=limit, max_bytes=max_bytes, job=job, step=step
    )
    next_offset = items[-1].seq if items else offset
    complete = finished and ((len(items) < limit and not cut) or next_offset >= build.last_log_seq)
    return LogPage(items=items, next_offset=next_offset, complete=complete)


def raw(db: Database, build_id: int, *, job: str | None, step: int | None) -> AsyncIterator[str]:
    return store.raw_text(db, build_id, job=job, step=step)
