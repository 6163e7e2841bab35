"""Log capture: chunking, seq without gaps, tagging, invalid UTF-8, the log endpoints, appends."""

from __future__ import annotations

import httpx

from tests.support import all_logs, create, wait_for_build, workflow


async def test_chunks_are_batched_sequenced_and_tagged(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - run: for i in $(seq 1 20000); do echo "line $i of some output"; done
                  - run: echo second-step
              b:
                steps:
                  - run: echo from-b
            """
        ),
    )
    await wait_for_build(client, body["id"])
    chunks = await all_logs(client, body["id"])
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    lines_a0 = "".join(c["content"] for c in chunks if (c["job_name"], c["step_index"]) == ("a", 0))
    assert lines_a0.splitlines() == [f"line {i} of some output" for i in range(1, 20001)]
    # Batched: far fewer chunks than lines, and none above 64 KiB.
    assert len(chunks) < 100
    assert all(len(c["content"].encode()) <= 64 * 1024 for c in chunks)
    tagged = {(c["job_name"], c["step_index"]) for c in chunks}
    assert tagged == {("a", 0), ("a", 1), ("b", 0)}
    assert "second-step\n" in [c["content"] for c in chunks if c["step_index"] == 1]


async def test_invalid_utf8_is_replaced(client: httpx.AsyncClient) -> None:
    body = await create(
        client, "jobs:\n  a:\n    steps:\n      - run: printf 'ok \\xff\\xfe bad\\n'\n"
    )
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success"
    text = "".join(c["content"] for c in await all_logs(client, body["id"]))
    assert text == "ok \ufffd\ufffd bad\n"


async def test_output_without_trailing_newline_is_kept(client: httpx.AsyncClient) -> None:
    body = await create(client, "jobs:\n  a:\n    steps:\n      - run: printf 'no newline'\n")
    await wait_for_build(client, body["id"])
    assert "".join(c["content"] for c in await all_logs(client, body["id"])) == "no newline"


async def test_log_endpoint_offset_limit_job_step(client: httpx.AsyncClient) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - run: echo a0
                  - run: echo a1
              b:
                needs: a
                steps:
                  - run: echo b0
            """
        ),
    )
    build_id = body["id"]
    await wait_for_build(client, build_id)
    page = (await client.get(f"/builds/{build_id}/logs", params={"limit": 2})).json()
    assert [c["content"] for c in page["items"]] == ["a0\n", "a1\n"]
    assert page["next_offset"] == 2 and page["complete"] is False
    rest = (await client.get(f"/builds/{build_id}/logs", params={"offset": 2})).json()
    assert [c["content"] for c in rest["items"]] == ["b0\n"]
    assert rest["complete"] is True and rest["next_offset"] == 3
    only_a1 = (await client.get(f"/builds/{build_id}/logs", params={"job": "a", "step": 1})).json()
    assert [c["content"] for c in only_a1["items"]] == ["a1\n"]
    raw = await client.get(f"/builds/{build_id}/logs/raw")
    assert raw.headers["content-type"].startswith("text/plain")
    assert raw.text == "a0\na1\nb0\n"
    raw_b = await client.get(f"/builds/{build_id}/logs/raw", params={"job": "b"})
    assert raw_b.text == "b0\n"


async def test_append_logs_idempotent_by_seq(client: httpx.AsyncClient) -> None:
    body = await create(client, "jobs:\n  a:\n    steps:\n      - run: echo x\n", dispatch=False)
    url = f"/builds/{body['id']}/logs"
    first = await client.post(url, json={"content": "hello\n"})
    assert first.status_code == 201 and first.json()["seq"] == 1
    second = await client.post(
        url, json={"content": "world\n", "seq": 2, "job_name": "a", "step_index": 0}
    )
    assert second.status_code == 201 and second.json()["seq"] == 2
    repeat = await client.post(
        url, json={"content": "world\n", "seq": 2, "job_name": "a", "step_index": 0}
    )
    assert repeat.status_code == 200 and repeat.json()["seq"] == 2
    conflict = await client.post(url, json={"content": "other\n", "seq": 2})
    assert conflict.status_code == 409
    gap = await client.post(url, json={"content": "far\n", "seq": 9})
    assert gap.status_code == 409 and "next seq" in gap.json()["detail"]
    chunks = (await client.get(url)).json()["items"]
    assert [(c["seq"], c["content"]) for c in chunks] == [(1, "hello\n"), (2, "world\n")]
    too_big = await client.post(url, json={"content": "x" * (1024 * 1024 + 1)})
    assert too_big.status_code == 413
    bad = await client.post(url, json={"seq": 0, "content": "x"})
    assert bad.status_code == 422
