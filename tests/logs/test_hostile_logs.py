"""Hostile log input (issue 10): bytes a database refuses, refused batches, pages bounded by
bytes, secrets split across appends, appends to finished builds, integers beyond 64 bits."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from sqlalchemy import text

from app.db import Database
from app.logs.writer import LogWriter
from app.metrics import Metrics
from app.services.create import NewBuild, create_build
from tests.helpers import all_logs, create, log_text, wait_for_build, wait_until

QUEUED = "jobs:\n  a:\n    steps:\n      - run: x\n"


async def test_nul_byte_in_step_output_keeps_every_line(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        "jobs:\n  a:\n    steps:\n      - run: echo before; printf 'bin\\0ary\\n'; echo after\n",
    )
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success"
    assert await log_text(client, body["id"]) == "before\nbin\u2400ary\nafter\n"
    raw = await client.get(f"/builds/{body['id']}/logs/raw")
    assert raw.text == "before\nbin\u2400ary\nafter\n"


async def test_nul_after_much_output_does_not_block_the_step(client: httpx.AsyncClient) -> None:
    # More than one batch of output around the NUL: the writer must not wedge on it.
    script = "seq 1 200000; printf 'x\\0y\\n'; seq 1 200000; echo end"
    body = await create(client, f"jobs:\n  a:\n    steps:\n      - run: {script}\n")
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success"
    logged = await log_text(client, body["id"])
    assert "\nx\u2400y\n" in logged
    assert logged.endswith("200000\nend\n")
    assert logged.count("\n") == 400002


async def test_appended_nul_and_lone_surrogate_are_replaced(client: httpx.AsyncClient) -> None:
    build = await create(client, QUEUED, dispatch=False)
    # Sent as JSON escapes, as any client may: a lone surrogate is valid JSON text.
    body = json.dumps({"content": "a\u0000b \ud800 c\n"})
    headers = {"Content-Type": "application/json"}
    response = await client.post(f"/builds/{build['id']}/logs", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["content"] == "a\u2400b \ufffd c\n"
    assert await log_text(client, build["id"]) == "a\u2400b \ufffd c\n"
    # The same append repeated at its seq is recognised as the same content.
    again = await client.post(
        f"/builds/{build['id']}/logs",
        content=json.dumps({"content": "a\u0000b \ud800 c\n", "seq": 1}),
        headers=headers,
    )
    assert again.status_code == 200, again.text
    bad_job = await client.post(
        f"/builds/{build['id']}/logs", json={"content": "x", "job_name": "a\u0000"}
    )
    assert bad_job.status_code == 422


async def _refuse_poison(db: Database) -> None:
    """A trigger that refuses any chunk containing 'poison', as the database refuses bad data."""
    async with db.transaction() as session:
        if db.is_sqlite:
            await session.exec(  # type: ignore[call-overload]
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON build_log_chunks "
                    "WHEN NEW.content LIKE '%poison%' "
                    "BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
                )
            )
        else:
            await session.exec(  # type: ignore[call-overload]
                text(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.content LIKE '%poison%' THEN "
                    "RAISE EXCEPTION 'poison refused' USING ERRCODE = '22000'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await session.exec(  # type: ignore[call-overload]
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON build_log_chunks "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                )
            )


async def _new_build(db: Database) -> int:
    async with db.transaction() as session:
        build = await create_build(
            session,
            NewBuild(pipeline_id="p", triggered_by="t", workflow_yaml=QUEUED, dispatch=False),
        )
    assert build.id is not None
    return build.id


async def _stored(db: Database, build_id: int) -> list[tuple[int, int | None, str]]:
    async with db.read() as session:
        rows = (
            await session.exec(  # type: ignore[call-overload]
                text(
                    "SELECT seq, step_index, content FROM build_log_chunks "
                    f"WHERE build_id = {build_id} ORDER BY seq"
                )
            )
        ).all()
    return [tuple(r) for r in rows]


async def test_batch_refused_for_its_data_is_stored_around_the_bad_chunk(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(database_url)
    metrics = Metrics()
    writer = LogWriter(db, metrics, flush_interval=60, chunk_max_bytes=64 * 1024)
    try:
        build_id = await _new_build(db)
        await _refuse_poison(db)
        await writer.write(build_id, "a", 0, "good one\n")
        await writer.write(build_id, "a", 1, "poison here\n")
        await writer.write(build_id, "a", 2, "good two\n")
        with caplog.at_level(logging.WARNING):
            # Stored at the first attempt (not kept for a retry that could never succeed).
            assert await writer.flush(build_id) is True
        assert "refused 3 log chunk(s)" in caplog.text
        stored = await _stored(db, build_id)
        assert [(seq, step) for seq, step, _ in stored] == [(1, 0), (2, 1), (3, 2)]
        assert stored[0][2] == "good one\n"
        assert stored[1][2].startswith("[ci-executor: 12 bytes of output could not be stored")
        assert "poison" not in stored[1][2]
        assert stored[2][2] == "good two\n"
        assert metrics.log_store_failures._value.get() == 1.0
        # Nothing is left to retry.
        assert await writer.flush(build_id) is True
        assert len(await _stored(db, build_id)) == 3
    finally:
        await db.dispose()


async def test_database_outage_blocks_a_step_only_for_a_while(database_url: str) -> None:
    db = Database(database_url)
    writer = LogWriter(
        db,
        Metrics(),
        flush_interval=0.01,
        chunk_max_bytes=1024,
        block_seconds=0.2,
        max_buffer_bytes=64 * 1024,
        batch_bytes=16 * 1024,
    )
    try:
        build_id = await _new_build(db)
        async with db.transaction() as session:
            await session.exec(text("ALTER TABLE build_log_chunks RENAME TO chunks_away"))  # type: ignore[call-overload]
        line = "x" * 99 + "\n"
        # Past two batches (2 x 16 KiB) the writes wait, but return while the database is
        # still away; past the buffer cap, output is counted, not kept.
        for _ in range(3):
            await asyncio.wait_for(writer.write(build_id, "a", 0, line * 200), timeout=30)
        await writer.write(build_id, "a", 0, line * 200)
        async with db.transaction() as session:
            await session.exec(text("ALTER TABLE chunks_away RENAME TO build_log_chunks"))  # type: ignore[call-overload]
        assert await writer.flush(build_id) is True
        stored = "".join(content for _, _, content in await _stored(db, build_id))
        assert stored.startswith(line * 600)
        assert stored.endswith(
            "[ci-executor: 20000 characters of output were dropped while the database was "
            "unreachable]\n"
        )
    finally:
        await db.dispose()


async def test_log_pages_are_bounded_by_bytes(client: httpx.AsyncClient) -> None:
    build = await create(client, QUEUED, dispatch=False)
    piece = "y" * (256 * 1024 - 1) + "\n"
    for _ in range(6):
        response = await client.post(f"/builds/{build['id']}/logs", json={"content": piece})
        assert response.status_code == 201
    page = (await client.get(f"/builds/{build['id']}/logs", params={"limit": 1000})).json()
    # 4 MB per page, counting the JSON worst case of 6 bytes per character: 2 chunks of 256 KiB.
    assert [c["seq"] for c in page["items"]] == [1, 2]
    assert page["next_offset"] == 2
    assert page["complete"] is False
    chunks = await all_logs(client, build["id"])
    assert [c["seq"] for c in chunks] == [1, 2, 3, 4, 5, 6]
    # One chunk always fits, so a page makes progress whatever its size.
    one = (
        await client.get(f"/builds/{build['id']}/logs", params={"offset": 5, "limit": 1000})
    ).json()
    assert [c["seq"] for c in one["items"]] == [6]


async def test_secret_split_across_two_appends_is_masked(client: httpx.AsyncClient) -> None:
    build = await create(client, QUEUED, dispatch=False, variables={"API_TOKEN": "s3cr3t-value"})
    url = f"/builds/{build['id']}/logs"
    first = await client.post(url, json={"content": "line one\ntoken is s3cr3", "seq": 1})
    assert first.status_code == 201
    second = await client.post(url, json={"content": "t-value, done\n", "seq": 2})
    assert second.status_code == 201
    assert second.json()["content"] == ", done\n"
    stored = await log_text(client, build["id"])
    assert stored == "line one\ntoken is ***, done\n"
    assert "s3cr" not in stored
    # Retrying the first append (its stored copy was cut at the secret) is still a no-op.
    retry = await client.post(url, json={"content": "line one\ntoken is s3cr3", "seq": 1})
    assert retry.status_code == 200, retry.text
    # Another job's output in between is not joined to it.
    await client.post(url, json={"content": "s3cr3", "job_name": "x"})
    other = await client.post(url, json={"content": "t-value\n", "job_name": "y"})
    assert other.json()["content"] == "t-value\n"


async def test_appending_to_a_finished_build_is_a_conflict(client: httpx.AsyncClient) -> None:
    build = await create(client, QUEUED, dispatch=False)
    url = f"/builds/{build['id']}/logs"
    assert (await client.post(url, json={"content": "early\n", "seq": 1})).status_code == 201
    assert (await client.post(f"/builds/{build['id']}/cancel")).status_code == 202

    async def cancelled() -> bool:
        return bool((await client.get(f"/builds/{build['id']}")).json()["status"] == "cancelled")

    await wait_until(cancelled)
    late = await client.post(url, json={"content": "late\n"})
    assert late.status_code == 409
    assert "finished" in late.json()["detail"]
    # An idempotent repeat of what was stored before the end is still answered as such.
    assert (await client.post(url, json={"content": "early\n", "seq": 1})).status_code == 200
    assert await log_text(client, build["id"]) == "early\n"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/builds/18446744073709551616/logs", {}),
        ("GET", "/builds/{id}/logs", {"params": {"offset": 2**63}}),
        ("GET", "/builds/{id}/logs", {"params": {"offset": -1}}),
        ("GET", "/builds/{id}/logs", {"params": {"step": 2**64}}),
        ("GET", "/builds/{id}/logs", {"params": {"limit": 2**64}}),
        ("GET", "/builds/{id}/logs", {"params": {"job": "a\x00"}}),
        ("GET", "/builds/{id}/logs/raw", {"params": {"step": 2**63}}),
        ("GET", "/builds/18446744073709551616/logs/raw", {}),
        ("GET", "/builds/{id}/logs/stream", {"params": {"offset": 2**64}}),
        ("GET", "/builds/{id}/logs/stream", {"headers": {"Last-Event-ID": str(2**64)}}),
        ("GET", "/builds/{id}/logs/stream", {"headers": {"Last-Event-ID": "9" * 5000}}),
        ("POST", "/builds/{id}/logs", {"json": {"content": "x", "seq": 2**63}}),
        ("POST", "/builds/{id}/logs", {"json": {"content": "x", "step_index": 2**40}}),
        ("POST", "/builds/9223372036854775808/logs", {"json": {"content": "x"}}),
    ],
)
async def test_integers_beyond_range_are_refused(
    client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, object]
) -> None:
    build = await create(client, QUEUED, dispatch=False)
    response = await client.request(method, path.format(id=build["id"]), **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


async def test_largest_accepted_offset_is_answered(client: httpx.AsyncClient) -> None:
    build = await create(client, QUEUED, dispatch=False)
    page = await client.get(f"/builds/{build['id']}/logs", params={"offset": 2**31 - 1})
    assert page.status_code == 200
    assert page.json()["items"] == []
