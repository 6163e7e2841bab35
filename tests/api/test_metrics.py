"""/metrics exposes the Prometheus series the issue lists, with real values."""

from __future__ import annotations

import httpx

from tests.support import create, wait_for_build


async def test_metrics_after_a_build(client: httpx.AsyncClient) -> None:
    body = await create(client, "jobs:\n  a:\n    steps:\n      - run: seq 1 1000\n")
    await wait_for_build(client, body["id"])
    response = await client.get("http://test/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'ci_builds_finished_total{status="success"} 1.0' in text
    assert "ci_build_duration_seconds_count 1.0" in text
    assert 'ci_step_duration_seconds_count{status="success"} 1.0' in text
    assert "ci_running_builds 0.0" in text
    assert "ci_running_jobs 0.0" in text
    assert "ci_queue_wait_seconds_count 1.0" in text
    assert "ci_log_bytes_total 3893.0" in text  # len("".join(f"{i}\n" for i in 1..1000))
    assert "ci_log_chunks_total" in text
    assert "ci_sse_subscribers 0.0" in text
    assert "ci_log_chunk_store_failures_total 0.0" in text
