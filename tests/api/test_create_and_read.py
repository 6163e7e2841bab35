"""CreateBuild, GetBuild, ListBuilds, snapshot, and bad input (on SQLite and Postgres)."""

from __future__ import annotations

import hashlib
from datetime import datetime

import httpx
import pytest

from app.models import BuildPublic
from tests.support import create, job, wait_for_build, workflow

DAG = workflow(
    """
    name: ci
    jobs:
      build:
        steps:
          - name: compile
            run: echo build
      test:
        needs: build
        steps:
          - run: echo test
          - run: echo more
      lint:
        steps:
          - run: echo lint
    """
)


async def test_create_stores_build_snapshot_jobs_edges_steps(client: httpx.AsyncClient) -> None:
    body = await create(
        client, DAG, dispatch=False, commit_sha="abc123", branch="main", variables={"A": "1"}
    )
    assert body["status"] == "queued"
    assert body["number"] == 1
    assert body["variables"] == {"A": "1"}
    assert body["yaml_sha256"] == hashlib.sha256(DAG.encode()).hexdigest()
    assert [j["name"] for j in body["jobs"]] == ["build", "test", "lint"] or {
        j["name"] for j in body["jobs"]
    } == {"build", "test", "lint"}
    assert all(j["status"] == "pending" for j in body["jobs"])
    assert job(body, "test")["needs"] == ["build"]
    assert [s["name"] for s in job(body, "test")["steps"]] == ["Run echo test", "Run echo more"]
    assert job(body, "build")["steps"][0]["name"] == "compile"
    assert body["edges"] == [{"from_job": "build", "to_job": "test"}]
    created = datetime.fromisoformat(body["created_at"])
    assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0  # type: ignore[union-attr]

    fetched = (await client.get(f"/builds/{body['id']}")).json()
    assert fetched == body
    snap = (await client.get(f"/builds/{body['id']}/snapshot")).json()
    assert snap["workflow_yaml"] == DAG
    assert snap["yaml_sha256"] == body["yaml_sha256"]


async def test_numbers_count_per_pipeline(client: httpx.AsyncClient) -> None:
    a1 = await create(client, DAG, dispatch=False, pipeline_id="a")
    b1 = await create(client, DAG, dispatch=False, pipeline_id="b")
    a2 = await create(client, DAG, dispatch=False, pipeline_id="a")
    assert (a1["number"], b1["number"], a2["number"]) == (1, 1, 2)


async def test_list_filters_pages_newest_first(client: httpx.AsyncClient) -> None:
    ids = []
    for i in range(5):
        body = await create(
            client, DAG, dispatch=False, pipeline_id="p" if i < 4 else "q", branch=f"b{i % 2}"
        )
        ids.append(body["id"])
    page = (await client.get("/builds", params={"pipeline_id": "p", "size": 3})).json()
    assert page["total"] == 4 and page["page"] == 1 and page["size"] == 3
    assert [b["id"] for b in page["items"]] == [ids[3], ids[2], ids[1]]
    page2 = (await client.get("/builds", params={"pipeline_id": "p", "size": 3, "page": 2})).json()
    assert [b["id"] for b in page2["items"]] == [ids[0]]
    by_branch = (await client.get("/builds", params={"branch": "b1"})).json()
    assert sorted(b["id"] for b in by_branch["items"]) == sorted([ids[1], ids[3]])
    queued = (await client.get("/builds", params={"status": "queued"})).json()
    assert queued["total"] == 5
    none = (await client.get("/builds", params={"status": "success"})).json()
    assert none == {"items": [], "total": 0, "page": 1, "size": 20}
    assert (await client.get("/builds", params={"size": 101})).status_code == 422
    assert (await client.get("/builds", params={"status": "bogus"})).status_code == 422


async def test_list_item_is_the_build_as_get_shows_it(client: httpx.AsyncClient) -> None:
    """ListBuilds reads plain rows, not ORM objects: each item must still be the build as
    GetBuild shows it (every BuildPublic field, in order, secrets masked)."""
    body = await create(
        client,
        DAG,
        dispatch=False,
        pipeline_id="rows",
        branch="feat/ü",
        commit_sha="abc123",
        variables={"NAME": "héllo", "API_TOKEN": "hunter2"},
    )
    await create(client, DAG, dispatch=False, pipeline_id="other")
    page = (await client.get("/builds", params={"pipeline_id": "rows"})).json()
    assert page["total"] == 1
    (item,) = page["items"]
    fetched = (await client.get(f"/builds/{body['id']}")).json()
    assert list(item) == list(BuildPublic.model_fields)
    assert item == {k: fetched[k] for k in item}
    assert item["variables"] == {"NAME": "héllo", "API_TOKEN": "***"}
    # A page past the end of a filtered list still tells the filtered total.
    beyond = (await client.get("/builds", params={"pipeline_id": "rows", "page": 3})).json()
    assert (beyond["items"], beyond["total"]) == ([], 1)


async def test_dispatch_runs_the_build(client: httpx.AsyncClient) -> None:
    body = await create(client, DAG)
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success"
    assert all(j["status"] == "success" for j in done["jobs"])
    assert done["started_at"] and done["finished_at"]
    assert done["finished_at"] >= done["started_at"]


@pytest.mark.parametrize(
    ("yaml_text", "line", "column", "fragment"),
    [
        ("jobs:\n  a:\n    steps:\n      - run: [unclosed\n", 5, 1, ""),
        ("- just\n- a list\n", 1, 1, "mapping"),
        ("name: x\n", 1, 1, "jobs"),
        ("jobs:\n  1bad:\n    steps:\n      - run: x\n", 2, 3, "1bad"),
        ("jobs:\n  a:\n    stepz: []\n    steps:\n      - run: x\n", 3, 5, "stepz"),
        ("jobs:\n  a:\n    needs: nope\n    steps:\n      - run: x\n", 3, 12, "nope"),
        ("jobs:\n  a:\n    steps: []\n", 3, 12, "step"),
        ("jobs:\n  a:\n    steps:\n      - name: x\n", 4, 9, "run"),
        ("jobs:\n  a:\n    steps:\n      - uses: docker://alpine\n", 4, 15, "not supported"),
    ],
)
async def test_invalid_workflow_is_422_with_position_and_stores_nothing(
    client: httpx.AsyncClient, yaml_text: str, line: int, column: int, fragment: str
) -> None:
    response = await client.post(
        "/builds", json={"pipeline_id": "p1", "triggered_by": "t", "workflow_yaml": yaml_text}
    )
    assert response.status_code == 422, response.text
    problems = response.json()["detail"]
    assert isinstance(problems, list) and problems
    assert all({"line", "column", "message"} <= set(p) for p in problems)
    assert any((p["line"], p["column"]) == (line, column) for p in problems), problems
    assert any(fragment in p["message"] for p in problems), problems
    assert (await client.get("/builds")).json()["total"] == 0


async def test_cycle_is_named(client: httpx.AsyncClient) -> None:
    yaml_text = workflow(
        """
        jobs:
          a:
            needs: c
            steps: [{run: x}]
          b:
            needs: a
            steps: [{run: x}]
          c:
            needs: b
            steps: [{run: x}]
        """
    )
    response = await client.post(
        "/builds", json={"pipeline_id": "p1", "triggered_by": "t", "workflow_yaml": yaml_text}
    )
    assert response.status_code == 422
    messages = " ".join(p["message"] for p in response.json()["detail"])
    assert "cycle" in messages and "a" in messages and "b" in messages and "c" in messages


async def test_every_problem_is_listed(client: httpx.AsyncClient) -> None:
    yaml_text = (
        "jobs:\n  a:\n    bogus: 1\n    steps:\n      - uses: x\n"
        "  b:\n    needs: zz\n    steps: []\n"
    )
    response = await client.post(
        "/builds", json={"pipeline_id": "p1", "triggered_by": "t", "workflow_yaml": yaml_text}
    )
    assert response.status_code == 422
    assert len(response.json()["detail"]) >= 4


@pytest.mark.parametrize(
    "body",
    [
        {"triggered_by": "t", "workflow_yaml": "jobs: {}"},
        {"pipeline_id": "p", "workflow_yaml": DAG, "variables": {"A": 1}},
        {"pipeline_id": "p", "workflow_yaml": DAG, "variables": {"A": None}},
        {"pipeline_id": "p", "workflow_yaml": DAG, "variables": {"not a name": "x"}},
        {"pipeline_id": "p", "workflow_yaml": DAG, "unknown_field": 1},
        {"pipeline_id": "", "workflow_yaml": DAG},
    ],
)
async def test_bad_bodies_are_422(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    response = await client.post("/builds", json=body)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    assert (await client.get("/builds")).json()["total"] == 0


async def test_oversized_payloads(client: httpx.AsyncClient) -> None:
    big = DAG + "#" + "x" * (1024 * 1024)
    response = await client.post("/builds", json={"pipeline_id": "p", "workflow_yaml": big})
    assert response.status_code == 413
    many = {f"V{i}": "x" for i in range(101)}
    response = await client.post(
        "/builds", json={"pipeline_id": "p", "workflow_yaml": DAG, "variables": many}
    )
    assert response.status_code == 422
    assert "too many variables" in response.json()["detail"]
    huge = "x" * (5 * 1024 * 1024)
    response = await client.post(
        "/builds", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert (await client.get("/builds")).json()["total"] == 0


async def test_unknown_build_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/builds/999", "/builds/999/snapshot", "/builds/999/logs", "/builds/999/logs/raw"):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "build 999 not found"}
    assert (await client.post("/builds/999/cancel")).status_code == 404
    assert (await client.post("/builds/999/retry")).status_code == 404


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    response = await client.get("http://test/openapi.json")
    spec = response.json()
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op.get("description") or op.get("summary"), f"{method} {path} undocumented"
    assert "/api/v1/builds/{build_id}/logs/stream" in spec["paths"]
    docs = await client.get("http://test/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("http://test/healthz")).json() == {"status": "ok"}
    ready = await client.get("http://test/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "queue": "ok"}


RICH = workflow(
    """
    name: rich
    on: push
    jobs:
      z-build:
        runs-on: [self-hosted, linux]
        environment:
          name: staging
          url: https://example.invalid/staging
        steps:
          - run: echo build
      test:
        needs: [z-build, a-lint]
        strategy:
          matrix:
            py: ["3.11", "3.12"]
        steps:
          - name: first
            run: echo test
          - run: echo more
      a-lint:
        steps:
          - run: echo lint
    """
)


async def test_create_answer_is_what_a_read_returns(client: httpx.AsyncClient) -> None:
    """The create's detail is made from the rows it wrote (no read back): it must be exactly
    what GET returns, ids, order, needs, matrix jobs, checkout steps and masking included."""
    body = await create(
        client,
        RICH,
        dispatch=False,
        repo_url="file:///nonexistent/repo",
        variables={"A": "1", "API_TOKEN": "hunter2"},
    )
    assert body["variables"] == {"A": "1", "API_TOKEN": "***"}
    assert len(body["jobs"]) == 4 and len(body["edges"]) == 4
    assert all(len(j["steps"]) >= 2 for j in body["jobs"])  # checkout first, then the runs
    fetched = (await client.get(f"/builds/{body['id']}")).json()
    assert fetched == body
