"""Actions in builds: resolved when a build is created, pinned, and loaded when it runs.

`resolve_actions(spec, fetcher)` fetches every remote `uses:` of a workflow's steps when the build
is created and returns the pins stored with the build's snapshot (`build_snapshots.actions`):
`{uses: {"commit": sha, "post": bool}}`, including the remote actions that remote composite
actions use. A retry copies them, so it runs the same code. An unknown
repository, ref or action.yml, and a Docker action, are the workflow's problem (422, naming the
action); an unreachable git server is not (503). `post` says the action has a `post` phase: the
plan adds a "Post <step>" row for it at the job's end (app/services/plan.py).

`load_actions` gives the executor the pinned trees (from the cache; fetched again by commit when
missing), and `ActionSupport` is what the executor needs to run actions: the fetcher and the
toolkit's ACTIONS_* variables for a job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from app.actions.errors import ActionError, ActionInfraError
from app.actions.fetch import ActionFetcher, FetchedAction, parse_uses
from app.artifacts.common import resolve_secret
from app.artifacts.tokens import issue_runtime_token
from app.config import Settings
from app.errors import Invalid, Unavailable
from app.workflow.parser import CHECKOUT
from app.workflow.spec import WorkflowSpec

log = logging.getLogger(__name__)
Pins = dict[str, dict[str, Any]]
MAX_NESTING = 10  # composite actions in composite actions (GitHub's limit too)


def fetcher_for(settings: Settings) -> ActionFetcher:
    return ActionFetcher(
        settings.actions_url, settings.actions_cache_dir, settings.actions_git_timeout_seconds
    )


def is_remote(uses: str) -> bool:
    return not (CHECKOUT.fullmatch(uses) or uses.startswith(("./", "../", "docker://")))


def remote_uses(spec: WorkflowSpec) -> list[str]:
    """Every remote `uses:` of the workflow's steps, once, in order."""
    seen: dict[str, None] = {}
    for job in spec.jobs:
        for step in job.steps:
            if step.uses is not None and is_remote(step.uses):
                seen.setdefault(step.uses, None)
    return list(seen)


async def resolve_actions(spec: WorkflowSpec, fetcher: ActionFetcher) -> Pins:
    """Fetch and pin the workflow's remote actions. Raises Invalid (every action that cannot be
    used, named) or Unavailable (the git server failed)."""
    pins: Pins = {}
    problems: list[dict[str, Any]] = []
    queue = [(uses, 0) for uses in remote_uses(spec)]
    while queue:
        uses, depth = queue.pop(0)
        if uses in pins or depth > MAX_NESTING:
            continue
        try:
            fetched = await fetcher.fetch(uses)
        except ActionInfraError as exc:
            raise Unavailable(f"could not fetch the action {uses}: {exc}") from exc
        except ActionError as exc:
            problems.append(_problem(uses, str(exc)))
            continue
        reason = fetched.manifest.unsupported_reason
        if reason is not None:
            problems.append(_problem(uses, f"{uses}: {reason}"))
            continue
        pins[uses] = {"commit": fetched.commit, "post": bool(fetched.manifest.post)}
        # A remote composite's own remote actions are pinned too: a retry runs the same code.
        for step in fetched.manifest.steps:
            nested = step.get("uses") if isinstance(step, dict) else None
            if isinstance(nested, str) and is_remote(nested.strip()):
                queue.append((nested.strip(), depth + 1))
    if problems:
        raise Invalid(problems)
    return pins


def _problem(uses: str, message: str) -> dict[str, Any]:
    return {"line": 0, "column": 0, "message": f"action {uses}: {message}"}


async def fetch_pinned(fetcher: ActionFetcher, uses: str, commit: str | None) -> FetchedAction:
    """The action at its pinned commit (no server needed when cached), named as written."""
    ref = parse_uses(uses)
    if commit is None:
        return await fetcher.fetch(ref)
    fetched = await fetcher.fetch(replace(ref, ref=commit))
    return replace(fetched, ref=ref)


async def load_actions(
    fetcher: ActionFetcher, pins: Mapping[str, Mapping[str, Any]]
) -> dict[str, FetchedAction]:
    """The pinned actions that can be loaded now; a missing one is fetched again (by commit)
    when its step runs, which then reports why it cannot."""
    loaded: dict[str, FetchedAction] = {}
    for uses, pin in pins.items():
        try:
            loaded[uses] = await fetch_pinned(fetcher, uses, str(pin.get("commit") or "") or None)
        except ActionError as exc:
            log.warning("pinned action %s not available: %s", uses, exc)
    return loaded


@dataclass(frozen=True)
class ActionSupport:
    """What the executor needs to run actions (built from the settings)."""

    settings: Settings
    fetcher: ActionFetcher

    @classmethod
    def from_settings(cls, settings: Settings) -> ActionSupport:
        return cls(settings, fetcher_for(settings))

    def runtime_env(self, build_id: int, job_name: str) -> dict[str, str]:
        """The toolkit's variables (the same as ArtifactService.runtime_env)."""
        settings = self.settings
        base = (
            settings.actions_public_url.rstrip("/")
            if settings.actions_public_url
            else f"http://{settings.host}:{settings.port}"
        )
        token = issue_runtime_token(
            resolve_secret(settings), build_id, job_name, settings.actions_token_ttl_seconds
        )
        return {
            "ACTIONS_RUNTIME_TOKEN": token,
            "ACTIONS_RUNTIME_URL": f"{base}/_actions/runtime/",
            "ACTIONS_RESULTS_URL": f"{base}/",
            "ACTIONS_CACHE_URL": f"{base}/_actions/cache/",
        }
