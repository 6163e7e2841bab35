"""The dispatch path, POST -> first step running: which write transactions it takes (the claim
and the first jobs' start are one), and that a build reaches its executor the same way whether
or not this replica parsed its workflow when creating it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
from sqlalchemy import event, update
from sqlmodel import col

from app.db import Database, GroupCommit
from app.models import PipelineCounter
from app.services.handoff import SpecCache
from tests.support import create, job, wait_for_build, wait_until, workflow

ONE_STEP = workflow(
    """
    jobs:
      build:
        steps:
          - run: echo one
    """
)


@contextmanager
def write_transactions(app: Any) -> Iterator[list[list[str]]]:
    """The committed transactions that wrote something, each as its statements (first words
    and table), in commit order; a statement committed alone through the driver
    (Database.commit_alone, a step's start or end) is one of them."""
    db = app.state.services.db
    engine = db.engine.sync_engine
    commit_alone = db.commit_alone

    async def alone(statement: Any, params: dict[str, Any], events: Any) -> list[Any]:
        rows = await commit_alone(statement, params, events)
        committed.append([" ".join(statement.sql.split()[:3]).upper()])
        return rows

    open_: dict[int, list[str]] = {}
    committed: list[list[str]] = []

    def executed(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = " ".join(statement.split()[:3]).upper()
        open_.setdefault(id(conn.connection.dbapi_connection), []).append(words)

    def commit(conn: Any) -> None:
        statements = open_.pop(id(conn.connection.dbapi_connection), [])
        if any(s.startswith(("INSERT", "UPDATE", "DELETE")) for s in statements):
            committed.append(statements)

    def rollback(conn: Any) -> None:
        open_.pop(id(conn.connection.dbapi_connection), None)

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine, "commit", commit)
    event.listen(engine, "rollback", rollback)
    db.commit_alone = alone
    try:
        yield committed
    finally:
        db.commit_alone = commit_alone
        event.remove(engine, "before_cursor_execute", executed)
        event.remove(engine, "commit", commit)
        event.remove(engine, "rollback", rollback)


def index_of(transactions: list[list[str]], prefix: str) -> int:
    return next(i for i, t in enumerate(transactions) if any(s.startswith(prefix) for s in t))


async def test_claim_and_first_job_start_are_one_transaction(
    app: Any, client: httpx.AsyncClient
) -> None:
    with write_transactions(app) as transactions:
        build = await create(client, ONE_STEP)
        detail = await wait_for_build(client, build["id"])
    assert detail["status"] == "success", detail
    # From the create on (the app's start-up sweeps may have written before it).
    path = transactions[index_of(transactions, "INSERT INTO BUILDS") :]
    # create; claim + job start; first step start: three commits to the first step running.
    assert index_of(path, "UPDATE BUILDS SET") == 1, path
    assert any(s.startswith("UPDATE BUILD_JOBS SET") for s in path[1]), path
    # A build without a concurrency group is claimed by its UPDATE … RETURNING alone.
    claim = [s for s in path[1] if not s.startswith("BEGIN")]
    assert claim[0].startswith("UPDATE BUILDS SET"), path
    assert not any(s.startswith("SELECT BUILDS") for s in claim), path
    assert index_of(path, "UPDATE BUILD_STEPS SET") == 2, path
    started = job(detail, "build")
    assert started["started_at"] <= started["steps"][0]["started_at"]


async def test_build_not_created_here_reads_and_parses_before_its_claim(
    app: Any, client: httpx.AsyncClient
) -> None:
    """Created without dispatch (nothing noted for the executor), then published, as a build
    created on another replica arrives: it runs, its job started in the claim's transaction."""
    build = await create(client, ONE_STEP, dispatch=False)
    services = app.state.services
    assert services.scheduler.specs.take(build["id"]) is None
    with write_transactions(app) as transactions:
        await services.queue.publish(build["id"])
        detail = await wait_for_build(client, build["id"])
    assert detail["status"] == "success", detail
    claim = index_of(transactions, "UPDATE BUILDS SET")
    assert any(s.startswith("UPDATE BUILD_JOBS SET") for s in transactions[claim]), transactions
    assert index_of(transactions, "UPDATE BUILD_STEPS SET") == claim + 1, transactions


async def test_jobs_the_claim_cannot_decide_are_left_to_the_walk(
    client: httpx.AsyncClient,
) -> None:
    """An `if` that is false, a matrix and a job with a concurrency group, beside a plain job:
    each ends as it would without the claim's first start."""
    text = workflow(
        """
        jobs:
          plain:
            steps:
              - run: echo plain
          never:
            if: "false"
            steps:
              - run: echo never
          grid:
            strategy:
              matrix:
                n: [1, 2]
            steps:
              - run: echo ${{ matrix.n }}
          grouped:
            concurrency: g1
            steps:
              - run: echo grouped
          after:
            needs: [plain, never]
            if: always()
            steps:
              - run: echo after
        """
    )
    build = await create(client, text)
    detail = await wait_for_build(client, build["id"])
    statuses = {j["name"]: j["status"] for j in detail["jobs"]}
    assert statuses == {
        "plain": "success",
        "never": "skipped",
        "grid (1)": "success",
        "grid (2)": "success",
        "grouped": "success",
        "after": "success",
    }, statuses
    assert detail["status"] == "success"


def test_spec_cache_is_bounded_and_each_note_is_taken_once() -> None:
    cache = SpecCache(specs=2, noted=2)
    spec_a, spec_b, spec_c = object(), object(), object()
    cache.remember("a", spec_a)  # type: ignore[arg-type]
    cache.remember("b", spec_b)  # type: ignore[arg-type]
    assert cache.get("a") is spec_a  # now the most recent: "b" goes first
    cache.remember("c", spec_c)  # type: ignore[arg-type]
    assert cache.get("b") is None
    assert cache.get("a") is spec_a and cache.get("c") is spec_c
    cache.note(1, "a")
    cache.note(2, "c")
    cache.note(3, "zzz")  # beyond two notes: build 1's is forgotten
    assert cache.take(1) is None
    noted = cache.take(2)
    assert noted is not None and (noted.sha256, noted.spec) == ("c", spec_c)
    assert cache.take(2) is None  # once
    assert cache.take(3) is None  # noted, but that spec is not kept


async def test_concurrent_creates_of_one_pipeline_number_its_builds_without_gaps(
    client: httpx.AsyncClient,
) -> None:
    """Postgres takes the number last in the create (the counter's lock held only to the
    commit); numbers stay unique and gap-free, and every build's detail shows its own."""
    created = await asyncio.gather(*(create(client, ONE_STEP, dispatch=False) for _ in range(20)))
    numbers = sorted(b["number"] for b in created)
    assert numbers == list(range(1, 21))
    for build in created:
        detail = (await client.get(f"/builds/{build['id']}")).json()
        assert detail["number"] == build["number"]


async def test_write_transactions_of_one_process_take_turns_in_order(
    database_url: str, backend: str
) -> None:
    """SQLite: while one transaction writes, this process's other writers wait for their turn
    here, in the order they asked, none of them inside SQLite's busy handler (which sleeps
    between retries and lets a later writer in first). Postgres has no single writer: there,
    every transaction simply commits."""
    db = Database(database_url)
    order: list[int] = []
    begins: list[str] = []
    inside = asyncio.Event()
    others_asked = asyncio.Event()

    def began(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN"):
            begins.append(statement)

    async def write(i: int) -> None:
        async with db.transaction() as session:
            order.append(i)
            await session.exec(
                update(PipelineCounter)
                .where(col(PipelineCounter.pipeline_id) == "none")
                .values(last_number=i)
            )
            if i == 0 and backend == "sqlite":
                inside.set()
                await others_asked.wait()
                assert len(begins) == 1  # the others never reached SQLite

    event.listen(db.engine.sync_engine, "before_cursor_execute", began)
    try:
        if backend == "sqlite":
            first = asyncio.create_task(write(0))
            await inside.wait()
            others = [asyncio.create_task(write(i)) for i in range(1, 20)]
            await wait_until(lambda: db.writers_waiting == 19, "19 writers waiting")
            others_asked.set()
            await asyncio.gather(first, *others)
        else:
            await asyncio.gather(*(write(i) for i in range(20)))
    finally:
        await db.dispose()
    assert sorted(order) == list(range(20))
    if backend == "sqlite":
        assert order == list(range(20))


@asynccontextmanager
async def creates_held(app: Any) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """The app's creates through a group of one lane (Postgres has four: a create arriving
    while fewer run would start at once in its own) whose transaction is busy with a unit that
    waits: creates POSTed meanwhile queue for its next one. Yields `release(n)`: once `n`
    creates are queued, let the waiting unit finish."""
    services = app.state.services
    creates = GroupCommit(services.db, lanes=1)
    app.state.services = dataclasses.replace(services, creates=creates)
    go = asyncio.Event()
    entered = asyncio.Event()

    async def hold(_session: Any) -> None:
        entered.set()
        await go.wait()

    holder = asyncio.ensure_future(creates.run(hold))
    await entered.wait()

    async def release(n: int) -> None:
        await wait_until(lambda: creates.waiting >= n, f"{n} creates queued")
        go.set()

    try:
        yield release
    finally:
        go.set()
        await holder
        app.state.services = services


async def test_creates_arriving_together_share_one_transaction(
    app: Any, client: httpx.AsyncClient, backend: str
) -> None:
    """POSTs that arrive while a create transaction runs are committed together in the next
    one (a burst takes the write lock or the pipeline's counter a few times, not once each),
    their rows written by one INSERT per table for all of them (one counter upsert for the
    pipeline), each answered with its own build, numbered without gaps."""
    with write_transactions(app) as transactions:
        async with creates_held(app) as release:
            posts = [
                asyncio.ensure_future(create(client, ONE_STEP, dispatch=False)) for _ in range(6)
            ]
            await release(6)
            created = await asyncio.gather(*posts)
    inserts = [t for t in transactions if any(s.startswith("INSERT INTO BUILDS") for s in t)]
    assert len(inserts) == 1, transactions
    counts = Counter(inserts[0])
    assert counts["INSERT INTO PIPELINE_COUNTERS"] == 1, inserts
    # SQLAlchemy sends a multi-row INSERT … RETURNING whose rows must come back in order as one
    # statement on Postgres; SQLite's driver takes it row by row (one statement each, still in
    # the same trip to its thread per statement and the same transaction).
    expected = 1 if backend == "postgres" else 6
    for table in ("BUILDS", "BUILD_SNAPSHOTS", "BUILD_JOBS", "BUILD_STEPS"):
        assert counts[f"INSERT INTO {table}"] == expected, inserts
    assert sorted(b["number"] for b in created) == list(range(1, 7))
    assert len({b["id"] for b in created}) == 6
    for build in created:
        detail = (await client.get(f"/builds/{build['id']}")).json()
        assert (detail["id"], detail["number"]) == (build["id"], build["number"])
        assert [j["name"] for j in detail["jobs"]] == ["build"]


async def test_a_shared_create_transaction_numbers_each_pipeline_and_keeps_every_row(
    app: Any, client: httpx.AsyncClient
) -> None:
    """One group transaction with creates of two pipelines, one of them a workflow with
    `concurrency` (written at once, with an ORM instance) among the planned ones (written
    together before the commit): each pipeline numbered 1..n without gaps, every build answered
    with its own id, jobs, steps and needs, and the stored detail equal to the answer."""
    grouped = workflow(
        """
        concurrency: deploy
        jobs:
          build:
            steps:
              - run: echo one
        """
    )
    two_jobs = workflow(
        """
        jobs:
          a:
            steps:
              - run: echo a
              - run: echo b
          b:
            needs: a
            steps:
              - run: echo c
        """
    )
    plan = [("p1", ONE_STEP), ("p2", two_jobs), ("p1", grouped), ("p2", ONE_STEP), ("p1", two_jobs)]
    with write_transactions(app) as transactions:
        async with creates_held(app) as release:
            posts = [
                asyncio.ensure_future(
                    create(client, yaml_text, dispatch=False, pipeline_id=pipeline)
                )
                for pipeline, yaml_text in plan
            ]
            await release(len(plan))
            created = await asyncio.gather(*posts)
    inserts = [t for t in transactions if any(s.startswith("INSERT INTO BUILDS") for s in t)]
    assert len(inserts) == 1, transactions
    by_pipeline: dict[str, list[int]] = {}
    for (pipeline, _), build in zip(plan, created, strict=True):
        assert build["pipeline_id"] == pipeline
        by_pipeline.setdefault(pipeline, []).append(build["number"])
    assert sorted(by_pipeline["p1"]) == [1, 2, 3]
    assert sorted(by_pipeline["p2"]) == [1, 2]
    assert len({b["id"] for b in created}) == len(plan)
    for build in created:
        stored = (await client.get(f"/builds/{build['id']}")).json()
        assert stored == build
        assert all(step["id"] for job in stored["jobs"] for step in job["steps"])
    assert [j["needs"] for j in created[1]["jobs"]] == [[], ["a"]]
    assert [len(j["steps"]) for j in created[4]["jobs"]] == [2, 1]


async def test_a_create_refused_in_a_shared_transaction_does_not_sink_the_others(
    app: Any, client: httpx.AsyncClient
) -> None:
    """Two POSTs with one idempotency key in the same group transaction: the unique index
    refuses the second insert, the group runs again one create at a time, and the answers are
    what separate transactions give: the first build (201), the same build again (200), and
    the unrelated create (201)."""
    payload = {"pipeline_id": "p", "triggered_by": "t", "workflow_yaml": ONE_STEP}
    payload["dispatch"] = False
    keyed = {"Idempotency-Key": "same"}
    async with creates_held(app) as release:
        posts = [
            asyncio.ensure_future(client.post("/builds", json=payload, headers=keyed)),
            asyncio.ensure_future(client.post("/builds", json=payload)),
            asyncio.ensure_future(client.post("/builds", json=payload, headers=keyed)),
        ]
        await release(3)
        answers = await asyncio.gather(*posts)
    assert sorted(a.status_code for a in answers) == [200, 201, 201], [a.text for a in answers]
    first, other, again = (a.json() for a in answers)
    assert first["id"] == again["id"] != other["id"]
    assert sorted({first["number"], other["number"]}) == [1, 2]
    assert (await client.get("/builds", params={"pipeline_id": "p"})).json()["total"] == 2
