"""A matrix computed from `needs` outputs is one placeholder job until its needs finish, shown
as pending expansion, then replaced by its combinations."""

from __future__ import annotations

import httpx

from app.config import Settings
from tests.services.gates import GATE_STEP, gate_ready, release
from tests.support import create, job, wait_for_build, workflow

WORKFLOW = workflow(
    f"""
    jobs:
      define:
        outputs:
          colors: ${{{{ steps.c.outputs.colors }}}}
        steps:
          - run: {GATE_STEP}
          - id: c
            run: echo 'colors=["red", "green"]' >> "$GITHUB_OUTPUT"
      paint:
        needs: define
        strategy:
          matrix:
            color: ${{{{ fromJSON(needs.define.outputs.colors) }}}}
        steps:
          - run: echo "painting ${{{{ matrix.color }}}}"
    """
)


async def test_placeholder_is_shown_until_the_matrix_is_known(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    created = await create(client, WORKFLOW)
    build_id = created["id"]
    await gate_ready(settings, build_id, "define")
    before = (await client.get(f"/builds/{build_id}")).json()
    paint = job(before, "paint")
    assert paint["pending_expansion"] is True
    assert paint["status"] == "pending"
    assert paint["steps"] == []  # planned per combination once the matrix is known
    assert job(before, "define")["pending_expansion"] is False
    assert job(before, "define")["status"] == "running"

    await release(settings, build_id, "define")
    done = await wait_for_build(client, build_id)
    assert done["status"] == "success", done
    names = sorted(j["name"] for j in done["jobs"])
    assert names == ["define", "paint (green)", "paint (red)"]
    assert not any(j["pending_expansion"] for j in done["jobs"])
    assert [s["status"] for s in job(done, "paint (red)")["steps"]] == ["success"]


async def test_placeholder_skipped_with_its_needs_stays_a_placeholder(
    client: httpx.AsyncClient,
) -> None:
    created = await create(
        client,
        workflow(
            """
            jobs:
              define:
                outputs:
                  m: ${{ steps.c.outputs.m }}
                steps:
                  - id: c
                    run: exit 3
              paint:
                needs: define
                strategy:
                  matrix: ${{ fromJSON(needs.define.outputs.m) }}
                steps: [{run: echo never}]
            """
        ),
    )
    done = await wait_for_build(client, created["id"])
    assert done["status"] == "failed"
    paint = job(done, "paint")
    assert (paint["status"], paint["pending_expansion"]) == ("skipped", True)
