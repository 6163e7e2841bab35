"""Secrets at rest (issue 10, "Also build"): encrypted in the database, never returned, masked in
logs, reaching steps as environment variables; purged after the retention period, after which a
retry says why it cannot run."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlmodel import select

from app.models import Build
from app.secrets import SecretsPurger
from tests.helpers import create, log_text, wait_for_build, wait_until, workflow

KEY = Fernet.generate_key().decode()
SECRET = "sup3r-s3cret-deploy-key"
PASSWORD = "pa55w0rd-in-a-variable"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"secrets_key": KEY, "secrets_retention_days": 0, "secrets_purge_interval_seconds": 3600}


async def _row(app: Any, build_id: int) -> Build:
    async with app.state.services.db.read() as session:
        build = (await session.exec(select(Build).where(Build.id == build_id))).one()
        assert isinstance(build, Build)
        return build


async def test_secrets_are_sealed_never_returned_and_masked(
    client: httpx.AsyncClient, app: Any
) -> None:
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - run: echo "pw=$DB_PASSWORD plain=$PLAIN"
            """
        ),
        variables={"DB_PASSWORD": PASSWORD, "PLAIN": "visible"},
        secrets={"DEPLOY_KEY": SECRET},
    )
    assert SECRET not in str(body) and PASSWORD not in str(body)
    assert body["variables"] == {"DB_PASSWORD": "***", "PLAIN": "visible"}
    done = await wait_for_build(client, body["id"])
    assert done["status"] == "success"
    text = await log_text(client, body["id"])
    assert "pw=*** plain=visible" in text
    row = await _row(app, body["id"])
    # At rest: neither value appears anywhere in the row, only the sealed token.
    dumped = str(row.model_dump())
    assert SECRET not in dumped and PASSWORD not in dumped
    assert row.secrets_sealed is not None
    for path in ("", "/snapshot"):
        answer = await client.get(f"/builds/{body['id']}{path}")
        assert SECRET not in answer.text and PASSWORD not in answer.text
    listing = await client.get("/builds")
    assert SECRET not in listing.text and PASSWORD not in listing.text


async def test_retry_reuses_secrets_until_they_are_purged(
    client: httpx.AsyncClient, app: Any
) -> None:
    body = await create(
        client,
        'jobs:\n  a:\n    steps:\n      - run: test "$DB_PASSWORD" = "$EXPECTED"\n',
        variables={"DB_PASSWORD": PASSWORD, "EXPECTED": PASSWORD},
    )
    assert (await wait_for_build(client, body["id"]))["status"] == "success"
    retried = await client.post(f"/builds/{body['id']}/retry")
    assert retried.status_code == 201
    again = await wait_for_build(client, retried.json()["id"])
    assert again["status"] == "success"  # the retry's step saw the real value again
    purger = SecretsPurger(app.state.services.db, retention_days=0, interval_seconds=3600)

    async def purged() -> bool:
        await purger.purge_once()
        return (await _row(app, body["id"])).secrets_sealed is None

    await wait_until(purged)
    row = await _row(app, body["id"])
    assert row.secrets_purged_at is not None
    refused = await client.post(f"/builds/{body['id']}/retry")
    assert refused.status_code == 409
    assert "purged" in refused.json()["detail"]


@pytest.mark.parametrize("settings_overrides", [{"secrets_key": ""}])
async def test_without_a_key_on_postgres_secrets_are_refused_clearly(
    client: httpx.AsyncClient, backend: str
) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite generates its key file; only a shared database needs SECRETS_KEY")
    response = await client.post(
        "/builds",
        json={
            "pipeline_id": "p1",
            "workflow_yaml": "jobs:\n  a:\n    steps:\n      - run: echo\n",
            "secrets": {"X": "y"},
        },
    )
    assert response.status_code == 422
    assert "SECRETS_KEY" in response.json()["detail"]


async def test_secrets_map_is_the_secrets_context_and_masked(client: httpx.AsyncClient) -> None:
    """`secrets` of POST /builds is what `${{ secrets.NAME }}` reads (GitHub's pattern: map it
    into `env:`), and its value never reaches the log in the clear."""
    body = await create(
        client,
        workflow(
            """
            jobs:
              a:
                steps:
                  - env:
                      KEY_FROM_CONTEXT: ${{ secrets.DEPLOY_KEY }}
                    run: |
                      test "$KEY_FROM_CONTEXT" = "sup3r-s3cret-deploy-key" && echo "matched"
                      echo "value=$KEY_FROM_CONTEXT"
                      echo "missing=[${{ secrets.NOT_GIVEN }}]"
            """
        ),
        secrets={"DEPLOY_KEY": SECRET},
    )
    done = await wait_for_build(client, body["id"])
    text = await log_text(client, body["id"])
    assert done["status"] == "success", text
    assert "matched" in text
    assert "value=***" in text
    assert "missing=[]" in text
    assert SECRET not in text
