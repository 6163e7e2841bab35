"""What the web UI needs from the API: the build list's filters, who the caller is, who
cancelled, and partial re-runs (failed jobs only, or chosen jobs) that reuse the other jobs'
results and logs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import all_logs, create, job, wait_for_build, wait_for_output, workflow

READ = {"Authorization": "Bearer r3ad-token"}
WRITE = {"Authorization": "Bearer wr1te-token"}

# a and b succeed; c fails; d needs c; e needs a only. A re-run of the failed jobs runs c and
# d again and reuses a, b and e.
DAG = workflow(
    """
    jobs:
      a:
        steps:
          - run: echo "a ran $CI_BUILD_ID"
      b:
        steps:
          - run: echo "b ran"
      c:
        needs: a
        steps:
          - run: echo "c ran"
          - run: test -n "$PASS_NOW"
      d:
        needs: c
        steps:
          - run: echo "d ran"
      e:
        needs: a
        steps:
          - run: echo "e ran"
    """
)


async def test_list_filters_by_actor_pipeline_branch_and_facets(
    client: httpx.AsyncClient,
) -> None:
    quick = "jobs:\n  a:\n    steps:\n      - run: 'true'\n"
    await create(
        client, quick, pipeline_id="web", triggered_by="alice", branch="main", dispatch=False
    )
    await create(client, quick, pipeline_id="web", triggered_by="bob", branch="dev", dispatch=False)
    await create(
        client, quick, pipeline_id="api", triggered_by="alice", branch="main", dispatch=False
    )

    async def ids(**params: Any) -> list[int]:
        page = (await client.get("/builds", params=params)).json()
        assert page["total"] == len(page["items"])
        return [b["id"] for b in page["items"]]

    everything = await ids()
    assert len(everything) == 3
    assert await ids(triggered_by="alice") == [everything[0], everything[2]]
    assert await ids(triggered_by="alice", pipeline_id="web") == [everything[2]]
    assert await ids(branch="dev") == [everything[1]]
    assert await ids(triggered_by="carol") == []
    # Past the end: an empty page that still tells the total, so the UI can offer the last page.
    beyond = (await client.get("/builds", params={"page": 99, "size": 2})).json()
    assert (beyond["items"], beyond["total"], beyond["page"]) == ([], 3, 99)
    too_long = await client.get("/builds", params={"triggered_by": "x" * 300})
    assert too_long.status_code == 422

    facets = (await client.get("/build-facets")).json()
    assert facets == {
        "pipelines": ["api", "web"],
        "branches": ["dev", "main"],
        "actors": ["alice", "bob"],
    }


async def test_whoami_without_tokens(client: httpx.AsyncClient) -> None:
    me = (await client.get("/whoami")).json()
    assert me == {"name": "anonymous", "role": "write", "can_write": True, "auth_enabled": False}


class TestWithTokens:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"api_tokens": "frontend:r3ad-token:read,pipeline:wr1te-token:write"}

    async def test_whoami_tells_the_role(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/whoami")).status_code == 401
        assert (
            await client.get("/whoami", headers={"Authorization": "Bearer wrong"})
        ).status_code == 401
        reader = (await client.get("/whoami", headers=READ)).json()
        assert reader == {
            "name": "frontend",
            "role": "read",
            "can_write": False,
            "auth_enabled": True,
        }
        writer = (await client.get("/whoami", headers=WRITE)).json()
        assert (writer["name"], writer["can_write"]) == ("pipeline", True)

    async def test_cancel_records_who(self, client: httpx.AsyncClient) -> None:
        body = {"pipeline_id": "p", "workflow_yaml": DAG, "dispatch": False}
        created = (await client.post("/builds", json=body, headers=WRITE)).json()
        assert created["cancelled_by"] is None
        assert (
            await client.post(f"/builds/{created['id']}/retry", json={}, headers=READ)
        ).status_code == 403
        cancelled = await client.post(f"/builds/{created['id']}/cancel", headers=WRITE)
        assert cancelled.status_code == 202
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["cancelled_by"] == "pipeline"
        retried = await client.post(f"/builds/{created['id']}/retry", json={}, headers=WRITE)
        assert retried.status_code == 201
        assert retried.json()["triggered_by"] == "pipeline"


async def test_rerun_failed_jobs_reuses_the_rest(client: httpx.AsyncClient) -> None:
    first = await wait_for_build(client, (await create(client, DAG))["id"])
    assert first["status"] == "failed"
    assert [job(first, n)["status"] for n in "abcde"] == [
        "success",
        "success",
        "failed",
        "skipped",
        "success",
    ]
    first_logs = await all_logs(client, first["id"])

    response = await client.post(f"/builds/{first['id']}/retry", json={"failed_only": True})
    assert response.status_code == 201, response.text
    second_id = response.json()["id"]
    assert response.json()["retry_of"] == first["id"]
    second = await wait_for_build(client, second_id)
    # c still fails (nothing changed); what matters is which jobs ran again.
    for name in ("a", "b", "e"):
        reused = job(second, name)
        assert reused["reused_from"] == first["id"]
        assert reused["status"] == "success"
        assert reused["started_at"] == job(first, name)["started_at"]
        assert reused["steps"] == [
            {**s, "id": t["id"]}
            for s, t in zip(job(first, name)["steps"], reused["steps"], strict=True)
        ]
    for name in ("c", "d"):
        assert job(second, name)["reused_from"] is None
    assert job(second, "c")["started_at"] != job(first, "c")["started_at"]
    assert (job(second, "c")["status"], job(second, "d")["status"]) == ("failed", "skipped")

    logs = await all_logs(client, second_id)
    # Seqs stay 1..n without gaps: the reused chunks first, in their order, then the new ones.
    assert [c["seq"] for c in logs] == list(range(1, len(logs) + 1))
    reused_text = [c["content"] for c in first_logs if c["job_name"] in ("a", "b", "e")]
    assert [c["content"] for c in logs[: len(reused_text)]] == reused_text
    rerun_jobs = {c["job_name"] for c in logs[len(reused_text) :]}
    assert rerun_jobs <= {"c", "d", None}
    assert "c" in rerun_jobs
    # The reused output says it came from the first run (its CI_BUILD_ID).
    a_text = "".join(c["content"] for c in logs if c["job_name"] == "a")
    assert f"a ran {first['id']}" in a_text
    raw = (await client.get(f"/builds/{second_id}/logs/raw", params={"job": "a"})).text
    assert raw == a_text


async def test_rerun_one_job_runs_it_and_its_dependents(client: httpx.AsyncClient) -> None:
    first = await wait_for_build(client, (await create(client, DAG))["id"])
    response = await client.post(f"/builds/{first['id']}/retry", json={"jobs": ["a"]})
    assert response.status_code == 201, response.text
    second = await wait_for_build(client, response.json()["id"])
    # a is re-run, so c, d and e (which need it, directly or not) run too; only b is reused.
    assert [n for n in "abcde" if job(second, n)["reused_from"] == first["id"]] == ["b"]
    await wait_for_output(client, second["id"], "e ran")
    assert job(second, "e")["status"] == "success"


async def test_rerun_refusals(client: httpx.AsyncClient) -> None:
    ok_yaml = "jobs:\n  a:\n    steps:\n      - run: 'true'\n"
    ok = await wait_for_build(client, (await create(client, ok_yaml))["id"])
    nothing = await client.post(f"/builds/{ok['id']}/retry", json={"failed_only": True})
    assert nothing.status_code == 409
    assert "no failed" in nothing.json()["detail"]
    unknown = await client.post(f"/builds/{ok['id']}/retry", json={"jobs": ["zz"]})
    assert unknown.status_code == 422
    assert "zz" in unknown.json()["detail"]
    bad = await client.post(f"/builds/{ok['id']}/retry", json={"jobs": []})
    assert bad.status_code == 422
    extra = await client.post(f"/builds/{ok['id']}/retry", json={"all": True})
    assert extra.status_code == 422
    before = (await client.get("/builds")).json()["total"]
    assert before == 1  # nothing was stored by the refusals
    # A plain retry (no body) still re-runs everything.
    plain = await client.post(f"/builds/{ok['id']}/retry")
    assert plain.status_code == 201
    assert all(j["reused_from"] is None for j in plain.json()["jobs"])


async def test_raw_log_is_named_after_the_build(client: httpx.AsyncClient) -> None:
    matrix = workflow(
        """
        jobs:
          build:
            strategy:
              matrix:
                os: [linux]
            steps:
              - run: echo hello
        """
    )
    done = await wait_for_build(client, (await create(client, matrix, pipeline_id="web.app"))["id"])
    name = done["jobs"][0]["name"]
    whole = await client.get(f"/builds/{done['id']}/logs/raw")
    assert whole.headers["content-disposition"] == 'inline; filename="web.app-1.log"'
    one = await client.get(
        f"/builds/{done['id']}/logs/raw", params={"job": name, "step": 0, "download": True}
    )
    disposition = one.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="web.app-1-build')
    assert disposition.endswith('-step0.log"')
    assert " " not in disposition.split("filename=")[1]
    assert "hello" in one.text
