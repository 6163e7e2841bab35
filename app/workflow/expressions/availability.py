"""Which contexts and functions GitHub allows in each workflow key.

GitHub refuses, at parse time, `${{ secrets.X }}` in a job's `if:` or `${{ env.X }}` in
`runs-on`; this table (from GitHub's "Context availability" documentation and the workflow schema
of actions/languageservices) lets the parser do the same through `check_key`.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.workflow.expressions.template import check


@dataclass(frozen=True)
class Availability:
    contexts: frozenset[str]
    status_functions: bool = False
    hash_files: bool = False


def _ctx(*names: str) -> frozenset[str]:
    return frozenset(names)


_BASE = ("github", "inputs", "vars")
_JOB = (*_BASE, "needs", "strategy", "matrix")
_STEP = (*_JOB, "secrets", "steps", "job", "runner", "env")

# Keys are written as in GitHub's documentation; `<job_id>` stands for any job.
AVAILABILITY: dict[str, Availability] = {
    "run-name": Availability(_ctx(*_BASE)),
    "env": Availability(_ctx(*_BASE, "secrets")),
    "concurrency": Availability(_ctx(*_BASE)),
    "on.workflow_call.inputs.<inputs_id>.default": Availability(_ctx(*_BASE)),
    "on.workflow_call.outputs.<output_id>.value": Availability(_ctx(*_BASE, "jobs")),
    "jobs.<job_id>.if": Availability(_ctx(*_BASE, "needs"), status_functions=True),
    "jobs.<job_id>.strategy": Availability(_ctx(*_BASE, "needs")),
    "jobs.<job_id>.name": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.runs-on": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.env": Availability(_ctx(*_JOB, "secrets")),
    "jobs.<job_id>.concurrency": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.environment": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.container": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.services": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.continue-on-error": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.timeout-minutes": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.defaults.run": Availability(_ctx(*_JOB, "env")),
    "jobs.<job_id>.outputs.<output_id>": Availability(_ctx(*_STEP)),
    "jobs.<job_id>.with.<with_id>": Availability(_ctx(*_JOB)),
    "jobs.<job_id>.secrets.<secrets_id>": Availability(_ctx(*_JOB, "secrets")),
    "jobs.<job_id>.steps.if": Availability(
        _ctx(*(c for c in _STEP if c != "secrets")), status_functions=True, hash_files=True
    ),
    "jobs.<job_id>.steps.name": Availability(_ctx(*_STEP), hash_files=True),
    "jobs.<job_id>.steps.run": Availability(_ctx(*_STEP), hash_files=True),
    "jobs.<job_id>.steps.env": Availability(_ctx(*_STEP), hash_files=True),
    "jobs.<job_id>.steps.with": Availability(_ctx(*_STEP), hash_files=True),
    "jobs.<job_id>.steps.working-directory": Availability(_ctx(*_STEP), hash_files=True),
    "jobs.<job_id>.steps.shell": Availability(_ctx(*_STEP)),
    "jobs.<job_id>.steps.continue-on-error": Availability(_ctx(*_STEP), hash_files=True),
    "jobs.<job_id>.steps.timeout-minutes": Availability(_ctx(*_STEP), hash_files=True),
}


def check_key(key: str, text: str) -> list[tuple[int, str]]:
    """`check(text)` with what GitHub allows under `key` (one of AVAILABILITY's keys)."""
    rules = AVAILABILITY[key]
    return check(
        text,
        allowed_contexts=rules.contexts,
        allow_status_functions=rules.status_functions,
        allow_hash_files=rules.hash_files,
    )
