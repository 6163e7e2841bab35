"""`ci-executor run WORKFLOW.yml`: run a workflow here, in process, with no server.

The same services as the server (create, claim through the state machine, the executor, the log
writer with masking) run against a throwaway SQLite database unless --database-url is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

from app.actions.support import resolve_actions
from app.config import Settings
from app.errors import Invalid, Unavailable
from app.logs.hub import HubEvent, LogEvent
from app.migrate import upgrade
from app.models import BuildDetail, BuildStatus
from app.models.schemas import StatusEvent
from app.secrets import seal_request
from app.services import builds, create, state
from app.services.create import NewBuild
from app.services.executor import BuildExecutor
from app.wiring import Core, running_core

_MARK = {"failed": "FAILED", "skipped": "skipped", "cancelled": "cancelled"}


def _parse_vars(pairs: list[str], flag: str = "--var") -> dict[str, str]:
    variables: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"ci-executor run: {flag} expects K=V, got {pair!r}")
        variables[name] = value
    return variables


def _event(args: argparse.Namespace) -> dict[str, Any] | None:
    """The event payload (--event), with --input values under `inputs` (as a
    workflow_dispatch payload carries them)."""
    event: dict[str, Any] | None = getattr(args, "event_payload", None)
    inputs = _parse_vars(getattr(args, "input", None) or [], "--input")
    if inputs:
        event = dict(event or {})
        given = event.get("inputs")
        event["inputs"] = {**(given if isinstance(given, dict) else {}), **inputs}
    return event


def _git(directory: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def git_context(workflow: Path) -> dict[str, str]:
    """What the checkout holding the workflow file says about the run, as GitHub would have it:
    `repository` (owner/name of the `origin` remote), `sha` (HEAD) and `branch`. Empty values
    are left out (no git, not a checkout, no remote, detached HEAD)."""
    directory = workflow.resolve().parent
    remote = _git(directory, "remote", "get-url", "origin")
    if remote.startswith(("/", ".", "file:")):
        remote = ""  # a local path names no GitHub repository
    path = remote.split(":", 1)[-1] if "://" not in remote else urlparse(remote).path
    parts = [p for p in path.strip("/").removesuffix(".git").split("/") if p]
    found = {
        "repository": "/".join(parts[-2:]) if len(parts) >= 2 else "",
        "sha": _git(directory, "rev-parse", "--verify", "-q", "HEAD"),
        "branch": _git(directory, "symbolic-ref", "-q", "--short", "HEAD"),
    }
    return {k: v for k, v in found.items() if v}


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f}s"


def print_summary(detail: BuildDetail, out: TextIO) -> None:
    rows = [("JOB / STEP", "STATUS", "EXIT", "DURATION")]
    for job in detail.jobs:
        rows.append((job.name, job.status, "", _duration(job.started_at, job.finished_at)))
        for step in job.steps:
            code = "" if step.exit_code is None else str(step.exit_code)
            rows.append(
                (
                    f"  {step.index + 1}. {step.name[:50]}",
                    step.status,
                    code,
                    _duration(step.started_at, step.finished_at),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out.write("\n")
    for row in rows:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() + "\n")
    out.write(f"\nbuild {detail.id}: {detail.status}")
    out.write(f" in {_duration(detail.started_at, detail.finished_at)}\n")
    if detail.error:
        out.write(f"error: {detail.error}\n")


async def _run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    path = Path(args.workflow)
    try:
        yaml_text = path.read_text()
    except OSError as exc:
        out.write(f"ci-executor run: cannot read {path}: {exc.strerror}\n")
        return 2
    with tempfile.TemporaryDirectory(prefix="ci-run-") as tmpdir:
        tmp = Path(tmpdir)
        settings = settings.model_copy(
            update={
                "database_url": args.database_url or f"sqlite+aiosqlite:///{tmp / 'ci.db'}",
                "workspace_root": Path(args.workspace) if args.workspace else tmp / "workspaces",
                "runner": "local",
                # Your own workflow on your own machine (like `act`): unsandboxed unless
                # LOCAL_ISOLATION is set explicitly.
                "local_isolation": settings.local_isolation
                if "local_isolation" in settings.model_fields_set
                else "none",
            }
        )
        await asyncio.to_thread(upgrade, settings.database_url)
        # The printer below is the hub's only subscriber: a queue this deep never makes it lag.
        async with running_core(settings, hub_queue_size=100_000) as core:
            return await _execute(args, yaml_text, core, out)


async def _create(args: argparse.Namespace, yaml_text: str, core: Core, out: TextIO) -> int | None:
    """Store the build and mark it running (no queue here); None after reporting an invalid
    workflow."""
    try:
        variables, sealed = seal_request(
            core.secret_box,
            _parse_vars(args.var),
            _parse_vars(getattr(args, "secret", None) or [], "--secret") or None,
        )
    except Invalid as exc:
        out.write(f"ci-executor run: {exc.detail}\n")
        return None
    # Without --repo, the checkout the workflow lives in gives github.repository, sha and ref
    # (as act does); flags win.
    local = {} if args.repo else await asyncio.to_thread(git_context, Path(args.workflow))
    try:
        spec = await asyncio.to_thread(create.parse_or_422, yaml_text)
        pins = await resolve_actions(spec, core.actions.fetcher)
        async with core.db.transaction() as session:
            build = await create.create_build(
                session,
                NewBuild(
                    # The pipeline id is github.repository when there is no repo URL.
                    pipeline_id=getattr(args, "repository", None)
                    or local.get("repository", "local"),
                    triggered_by=getattr(args, "actor", None) or "ci-executor run",
                    workflow_yaml=yaml_text,
                    commit_sha=args.sha or local.get("sha"),
                    branch=args.branch or (None if args.sha else local.get("branch")),
                    repo_url=args.repo,
                    variables=variables,
                    secrets_sealed=sealed,
                    dispatch=False,
                    event_name=getattr(args, "event_name", None),
                    event=_event(args),
                    actions=pins,
                ),
                spec,
            )
            assert build.id is not None
            await state.build(session, build.id, BuildStatus.running)
            return build.id
    except Invalid as exc:
        out.write(f"{args.workflow}: invalid workflow\n")
        for problem in exc.detail:
            out.write(
                f"  line {problem['line']}, column {problem['column']}: {problem['message']}\n"
            )
        return None
    except Unavailable as exc:
        out.write(f"{args.workflow}: {exc.detail}\n")
        return None


def _print_event(event: HubEvent, names: dict[tuple[str, int], str], out: TextIO) -> None:
    """Output lines prefixed [job/step]; a line when a step starts and when it ends badly."""
    if isinstance(event, LogEvent):
        chunk = event.chunk
        step = names.get((chunk.job_name or "", chunk.step_index or 0), "")
        for line in chunk.content.splitlines():
            out.write(f"[{chunk.job_name}/{step}] {line}\n")
    elif isinstance(event, StatusEvent) and event.kind == "step" and event.job_name:
        step = names.get((event.job_name, event.step_index or 0), "")
        if event.status == "running":
            out.write(f"==> {event.job_name} / {step}\n")
        elif event.status != "success":
            out.write(f"<== {event.job_name} / {step}: {_MARK.get(event.status, event.status)}\n")
    out.flush()


async def _execute(args: argparse.Namespace, yaml_text: str, core: Core, out: TextIO) -> int:
    build_id = await _create(args, yaml_text, core, out)
    if build_id is None:
        return 2
    async with core.db.read() as session:
        names = {
            (job.name, step.index): step.name
            for job in (await builds.detail(session, build_id)).jobs
            for step in job.steps
        }
    ctx = core.build_context(build_id)
    loop = asyncio.get_running_loop()
    interrupts = 0

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            out.write("\ncancelling (Ctrl-C again to abort at once)\n")
            ctx.request_cancel()
        else:
            raise SystemExit(130)

    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        with core.hub.subscribe(build_id) as sub:
            task = asyncio.create_task(BuildExecutor(ctx).run())
            while not task.done() or not sub.queue.empty():
                getter = asyncio.create_task(sub.queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                _print_event(getter.result(), names, out)
            await task
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
    async with core.db.read() as session:
        detail = await builds.detail(session, build_id)
    print_summary(detail, out)
    return 0 if detail.status == BuildStatus.success else 1


def run_workflow(args: argparse.Namespace, settings: Settings) -> int:
    """Run the workflow with `settings` (from the environment) for the tuning knobs; the
    database, the workspace and the runner (always local) come from the command line."""
    return asyncio.run(_run(args, settings, sys.stdout))
