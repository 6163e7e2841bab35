"""The `ci-executor` command: serve the API, migrate the database, or run a workflow locally."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from pydantic import ValidationError

from app.config import Settings


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]).upper()
            print(f"ci-executor: bad setting {name}: {err['msg']}", file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None


async def _preflight(settings: Settings) -> str | None:
    """Check what the service cannot run without, so a bad setup is one clear line, not a
    stack trace from inside the server's startup."""
    from sqlalchemy import literal
    from sqlmodel import select

    from app.db import Database
    from app.runners import create_runner

    db = Database(settings.database_url)
    try:
        async with db.read() as session:
            await session.exec(select(literal(1)))
    except Exception as exc:
        return f"cannot reach the database at DATABASE_URL: {type(exc).__name__}: {exc}"
    finally:
        await db.dispose()
    runner = create_runner(settings)
    try:
        await runner.start()
    except Exception as exc:
        return f"the {settings.runner} runner cannot start: {exc}"
    await runner.stop()
    return None


def _serve(_args: argparse.Namespace) -> int:
    import asyncio

    import uvicorn

    from app.main import create_app
    from app.serving import UVICORN_OPTIONS

    settings = _settings()
    problem = asyncio.run(_preflight(settings))
    if problem:
        print(f"ci-executor: {problem}", file=sys.stderr)  # noqa: T201
        return 3
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 15,
        **UVICORN_OPTIONS,
    )
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from app.migrate import downgrade, upgrade

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.downgrade:
        downgrade(settings.database_url, args.revision or "base")
    else:
        upgrade(settings.database_url, args.revision or "head")
    return 0


def _run(args: argparse.Namespace) -> int:
    from app.local_run import run_workflow

    args.event_payload = None
    if getattr(args, "event", None):
        import json
        from pathlib import Path

        problem = None
        try:
            payload = json.loads(Path(args.event).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problem = f"cannot read the event file {args.event}: {exc}"
        else:
            if not isinstance(payload, dict):
                problem = f"the event file {args.event} must hold a JSON object"
        if problem is not None:
            print(f"ci-executor: {problem}", file=sys.stderr)  # noqa: T201
            return 2
        args.event_payload = payload

    # Always the local runner, whatever RUNNER says: `run` executes on this machine.
    return run_workflow(args, _settings(runner="local"))


def _validate(args: argparse.Namespace) -> int:
    from app.workflow.describe import validate_file

    code, text = validate_file(args.workflow)
    (sys.stdout if code == 0 else sys.stderr).write(text)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ci-executor",
        description="ci-executor: stores builds, runs their DAG of jobs and steps, and serves "
        "builds and live logs. Settings come from environment variables (see .env.example).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the HTTP API with the scheduler and log writer",
        description="Serve the API on HOST:PORT (default 127.0.0.1:10056) with the queue "
        "consumer, scheduler and log writer. The database must be migrated first.",
    )
    serve.set_defaults(func=_serve)
    migrate = sub.add_parser(
        "migrate",
        help="apply database migrations (DATABASE_URL)",
        description="Upgrade the database at DATABASE_URL to the newest schema (or to REVISION).",
    )
    migrate.add_argument("revision", nargs="?", help="target revision (default: head / base)")
    migrate.add_argument("--downgrade", action="store_true", help="downgrade instead")
    migrate.set_defaults(func=_migrate)
    run = sub.add_parser(
        "run",
        help="run a workflow file on this machine, without a server",
        description="Run WORKFLOW.yml in process with the local runner, printing live output "
        "prefixed [job/step] and a summary table. Exit code 0 only when the build succeeded. "
        "Ctrl-C cancels the build.",
    )
    run.add_argument("workflow", help="path to the workflow YAML")
    run.add_argument("--var", action="append", default=[], metavar="K=V", help="a build variable")
    run.add_argument("--repo", help="repository URL to check out in every job")
    run.add_argument("--sha", help="commit to check out (with --repo)")
    run.add_argument("--branch", help="branch to check out when no --sha is given")
    run.add_argument(
        "--database-url", help="keep the build in this database (default: a throwaway SQLite)"
    )
    run.add_argument("--workspace", help="workspace root (default: a temporary directory)")
    run.add_argument("--event-name", help="the trigger's name, github.event_name (default: push)")
    run.add_argument(
        "--event", metavar="FILE", help="a JSON file with the trigger's payload (github.event)"
    )
    run.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="K=V",
        help="a workflow input (github.event.inputs, `inputs`), as `gh workflow run -f` gives it",
    )
    run.add_argument(
        "--secret", action="append", default=[], metavar="K=V", help="a secret (`secrets` context)"
    )
    run.add_argument("--actor", help="github.actor (default: ci-executor run)")
    run.add_argument(
        "--repository",
        metavar="OWNER/NAME",
        help="github.repository when no --repo is given (default: local)",
    )
    run.set_defaults(func=_run)
    validate = sub.add_parser(
        "validate",
        help="check a workflow file and print its plan",
        description="Parse WORKFLOW.yml as a build would: print the plan (jobs after matrix "
        "expansion, needs, steps) and exit 0, or print every problem as FILE:LINE:COLUMN: "
        "message and exit 2.",
    )
    validate.add_argument("workflow", help="path to the workflow YAML")
    validate.set_defaults(func=_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
