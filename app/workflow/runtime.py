"""A job's life as GitHub Actions defines it, step by step: contexts, expressions, runtime files.

Runner-neutral and free of I/O. A runner drives one `JobRuntime` per job:

    prepared = runtime.prepare(step, workspace=..., temp=...)   # before the step
    ... run prepared.argv (the script is prepared.script, written to prepared.script_name) with
        prepared.env in prepared.working_directory, at most prepared.timeout_seconds ...
    runtime.finish(step, status, files)                          # after it

`files` are the contents of the step's `$GITHUB_OUTPUT`, `$GITHUB_ENV`, `$GITHUB_PATH` and
`$GITHUB_STEP_SUMMARY` files (`RuntimeFiles`), read by the runner however it can: the local runner
reads its temp dir; the kubernetes runner reads them from the pod. Everything GitHub evaluates at
the moment a step starts (`if`, `env`, `run`, `with`, `working-directory`, `timeout-minutes`,
`continue-on-error`) is evaluated in `prepare`, so a step sees the outputs of the steps before it.
"""

from __future__ import annotations

import contextlib
import functools
import math
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.actions.errors import ActionError
from app.actions.fetch import FetchedAction
from app.workflow import expressions as ex
from app.workflow.parser import CHECKOUT
from app.workflow.spec import StepSpec

if TYPE_CHECKING:  # app.runners.base imports app.workflow
    from app.runners.base import StepRun
    from app.workflow.session import StepSession

OUTPUT_FILES = ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")
# What every invocation of the step protocol gets (app/workflow/session.py).
INVOCATION_FILES = (*OUTPUT_FILES, "GITHUB_STATE")
MAX_FILE_BYTES = 1024 * 1024  # GitHub's limit for a step summary; outputs get the same bound

# GitHub's shells (docs: "jobs.<job_id>.steps[*].shell"). Without `shell:` we use the strict bash
# line too (GitHub uses `bash -e {0}` then), a deliberate difference kept from before: pipefail.
SHELLS: dict[str, tuple[str, str]] = {  # name -> (command template, script file extension)
    "bash": ("bash --noprofile --norc -eo pipefail {0}", ".sh"),
    "sh": ("sh -e {0}", ".sh"),
    "python": ("python3 {0}", ".py"),
    "pwsh": ("pwsh -command \". '{0}'\"", ".ps1"),
    "powershell": ("pwsh -command \". '{0}'\"", ".ps1"),
}


@dataclass(frozen=True)
class RuntimeFiles:
    """The runtime files' contents after a step ("" when the step left one empty)."""

    output: str = ""
    env: str = ""
    path: str = ""
    summary: str = ""
    state: str = ""  # $GITHUB_STATE (JavaScript actions' pre/main phases)


@dataclass(frozen=True)
class Prepared:
    """A step ready to run, or why it must not (skip, or fail with `error`)."""

    run: bool
    error: str | None = None  # an expression failed: the step fails with this message
    argv: tuple[str, ...] = ()
    script: str = ""
    script_name: str = ""  # file name (in the job's temp dir) the script is written to
    env: dict[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    timeout_seconds: float | None = None
    continue_on_error: bool = False


@dataclass
class _StepResult:
    outputs: dict[str, str] = field(default_factory=dict)
    outcome: str = "success"
    conclusion: str = "success"


class FileFormatError(ValueError):
    pass


def parse_key_values(text: str, what: str) -> dict[str, str]:
    """GitHub's `$GITHUB_OUTPUT` / `$GITHUB_ENV` format: `name=value` lines and
    `name<<DELIMITER` ... `DELIMITER` blocks for multi-line values."""
    result: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i].rstrip("\r")
        i += 1
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if equals >= 0 and (heredoc < 0 or equals < heredoc):
            name, value = line[:equals], line[equals + 1 :]
        elif heredoc >= 0:
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            if not name or not delimiter:
                raise FileFormatError(f"{what}: invalid line {line!r}")
            body: list[str] = []
            while i < len(lines) and lines[i].rstrip("\r") != delimiter:
                body.append(lines[i].rstrip("\r"))
                i += 1
            if i >= len(lines):
                raise FileFormatError(
                    f"{what}: matching delimiter not found {delimiter!r} for {name!r}"
                )
            i += 1
            value = "\n".join(body)
        else:
            raise FileFormatError(f"{what}: invalid line {line!r} (expected name=value)")
        if not name:
            raise FileFormatError(f"{what}: a line has an empty name")
        result[name] = value
    return result


def shell_command(shell: str, script_path: str) -> tuple[str, ...]:
    """argv for a known shell or a custom `cmd {0}` template."""
    template = SHELLS[shell][0] if shell in SHELLS else shell
    return tuple(part.replace("{0}", script_path) for part in _split(template))


@functools.lru_cache(maxsize=256)  # shlex is slow, and a job's steps share one or two shells
def _split(template: str) -> tuple[str, ...]:
    return tuple(shlex.split(template))


def input_name(name: str) -> str:
    """`with:` input → environment variable. GitHub keeps '-' (INPUT_FETCH-DEPTH); a shell cannot
    read such a name, so ours turn it into '_'."""
    return "INPUT_" + name.replace(" ", "_").replace("-", "_").upper()


def script_suffix(shell: str) -> str:
    return SHELLS[shell][1] if shell in SHELLS else ""


class JobRuntime:
    """The mutable state of one running job: env and PATH additions, step results, contexts."""

    def __init__(
        self,
        *,
        contexts: Mapping[str, Any],
        env: Mapping[str, str],
        overrides: Mapping[str, str],
        steps: Mapping[int, StepSpec],
        default_shell: str,
        outputs: Mapping[str, str],
        event: str = "{}",
        hash_files: Callable[[str], ex.HashFiles] | None = None,
        env_templates: tuple[Mapping[str, str], ...] = (),
        actions: Mapping[str, FetchedAction] | None = None,
        posts: Mapping[int, int] | None = None,
        fetch: Callable[[str], Awaitable[FetchedAction]] | None = None,
        action_env: Mapping[str, str] | None = None,
        actions_cache: Path | None = None,
    ) -> None:
        self.event = event
        self.env_templates = env_templates
        self.contexts = dict(contexts)  # github, vars, secrets, inputs, matrix, needs, ...
        self.env = dict(env)  # predefined < workflow < job env, evaluated
        self.overrides = dict(overrides)  # build variables: above everything, as documented
        self.specs = dict(steps)  # step index -> its spec (absent: built-in steps)
        self.default_shell = default_shell
        self.output_templates = dict(outputs)
        self.hash_files = hash_files
        self.path: list[str] = []  # $GITHUB_PATH additions, newest first
        self.results: dict[str, _StepResult] = {}  # by step id
        self.step_outputs: dict[int, dict[str, str]] = {}  # by index, for storing
        # `::set-output` lines of the process running now: they belong to that process's step,
        # which inside a composite action is a nested step with its own `id`.
        self._command_outputs: dict[str, str] = {}
        self.summaries: dict[int, str] = {}
        self.failed = False
        self.cancelled = False
        # The job's `continue-on-error`, evaluated when it started: its failure does not fail
        # the build.
        self.continue_on_error = False
        # Actions (app/workflow/session.py): the build's pinned remote actions by `uses:` text,
        # post rows (their index -> the index of the step whose action they finish), how to fetch
        # an action met at run time, the toolkit's ACTIONS_* variables, and where the actions
        # cache is on this host (`actions_dir`, set by `start`, is where the step sees it).
        self.actions = dict(actions or {})
        self.posts = dict(posts or {})
        self._fetch = fetch
        self.action_env = dict(action_env or {})
        self.actions_cache = actions_cache
        self.actions_dir: str | None = None
        self.temp = "/tmp"
        self.workspace = "."
        self.pending_posts: dict[int, Any] = {}  # main index -> what its post row needs
        self._sequence = 0
        # Fresh runtime file paths per invocation: a runner that re-attaches (kubernetes) re-reads
        # the files of invocations that ended before it took over. A runner that cannot re-attach
        # (local) sets this: the job's invocations, one at a time, share one set of paths, each
        # emptied before its invocation and read back after it. Creating a file cost ~0.8 ms on
        # the bench machine's ext4, six per step; emptying an existing one ~10 us.
        self.reuse_files = False

    # --- contexts ------------------------------------------------------------------------------

    def context(self, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        steps = {
            sid: {"outputs": r.outputs, "outcome": r.outcome, "conclusion": r.conclusion}
            for sid, r in self.results.items()
        }
        # Build variables are above everything in a step's environment, so in `env` too.
        env = {**(env if env is not None else self.env), **self.overrides}
        return {**self.contexts, "env": env, "steps": steps}

    def status(self) -> ex.Status:
        return ex.Status(
            success=not self.failed and not self.cancelled,
            failure=self.failed,
            cancelled=self.cancelled,
        )

    # --- before a step -------------------------------------------------------------------------

    def start(
        self, *, workspace: str, temp: str, tool_cache: str, actions_dir: str | None = None
    ) -> dict[str, str]:
        """The job's directories are known: set the path-valued variables and contexts.
        `actions_dir`: where the steps see the executor's actions cache (None: at its own path).
        Returns the files the runner writes into `temp` before the first step (name -> text)."""
        self.temp, self.workspace, self.actions_dir = temp, workspace, actions_dir
        self.contexts["github"] = {**self.contexts.get("github", {}), "workspace": workspace}
        self.contexts["runner"] = {
            **self.contexts.get("runner", {}),
            "temp": temp,
            "tool_cache": tool_cache,
        }
        # Workflow and job env again, now that `github.workspace` and `runner.temp` are known.
        job_env: dict[str, str] = {}
        for layer in self.env_templates:
            for name, value in layer.items():
                if "${{" in value:
                    with contextlib.suppress(ex.ExpressionError):
                        job_env[name] = ex.interpolate(value, self.context({**self.env, **job_env}))
                else:
                    job_env[name] = value
        self.env.update(job_env)
        self.env.update(
            {
                "GITHUB_WORKSPACE": workspace,
                "RUNNER_TEMP": temp,
                "RUNNER_TOOL_CACHE": tool_cache,
                "GITHUB_EVENT_PATH": f"{temp}/event.json",
            }
        )
        return {"event.json": self.event}

    def prepare(
        self, step: StepRun, *, files: Mapping[str, str], temp: str, base_path: str
    ) -> Prepared:
        """Evaluate what the step needs now. `files` maps GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH
        and GITHUB_STEP_SUMMARY to the paths the runner chose for this step."""
        spec = self.specs.get(step.index)
        if step.index in self.posts or (
            spec is not None and spec.uses is not None and not CHECKOUT.fullmatch(spec.uses)
        ):
            # Only `session` runs actions: a runner still on prepare/finish must not report a
            # step it never ran as a success.
            return Prepared(
                run=True, error="this runner does not run actions yet (the step protocol: session)"
            )
        status = self.status()
        hash_files = (
            self.hash_files(self.env.get("GITHUB_WORKSPACE", ".")) if (self.hash_files) else None
        )
        action = spec.id if spec is not None and spec.id else f"__run_{step.index}"
        self.contexts["github"] = {**self.contexts.get("github", {}), "action": action}
        contexts = self.context()
        continue_on_error = step.continue_on_error
        timeout_seconds = step.timeout_seconds
        working_directory = step.working_directory
        templates: dict[str, str] = {}
        if spec is not None:
            templates = dict(spec.env)
            if spec.uses is not None:
                templates.update({input_name(k): v for k, v in spec.with_.items()})
        try:
            if spec is not None:
                run = ex.condition(
                    spec.condition.source, contexts, status=status, hash_files=hash_files
                )
            else:
                run = status.success
            if not run:
                return Prepared(run=False)
            env = dict(self.env)
            for name, value in templates.items():
                env[name] = ex.interpolate(value, contexts, status=status, hash_files=hash_files)
            env.update(self.overrides)
            step_contexts = self.context(env)
            script = step.script
            if spec is not None and spec.uses is None:
                script = ex.interpolate(script, step_contexts, status=status, hash_files=hash_files)
            if spec is not None:
                continue_on_error = _flag(spec.continue_on_error, step_contexts, status)
                minutes = _number(spec.timeout_minutes, step_contexts, status)
                timeout_seconds = minutes * 60 if minutes else None
                if working_directory is not None:
                    working_directory = ex.interpolate(working_directory, step_contexts)
        except ex.ExpressionError as exc:
            return Prepared(run=True, error=f"Error evaluating the step's expressions: {exc}")
        full_env = {k: v for k, v in step.env.items() if k not in templates}
        full_env.update(env)
        full_env.update(files)
        full_env["GITHUB_ACTION"] = action
        if self.path:
            full_env["PATH"] = ":".join([*self.path, full_env.get("PATH") or base_path])
        chosen = step.shell_template or self.default_shell
        if "${{" in chosen:
            try:
                chosen = ex.interpolate(chosen, step_contexts).strip() or "bash"
            except ex.ExpressionError as exc:
                return Prepared(run=True, error=f"Error evaluating `shell`: {exc}")
        name = f"step{'' if self.reuse_files else f'-{step.index}'}{script_suffix(chosen)}"
        return Prepared(
            run=True,
            argv=shell_command(chosen, f"{temp}/{name}"),
            script=script,
            script_name=name,
            env=full_env,
            working_directory=working_directory,
            timeout_seconds=timeout_seconds,
            continue_on_error=continue_on_error,
        )

    # --- after a step --------------------------------------------------------------------------

    def finish(
        self, index: int, status: str, files: RuntimeFiles, *, continue_on_error: bool
    ) -> str | None:
        """Record a finished step; an error message when its runtime files are malformed
        (which fails the step, as on GitHub)."""
        outputs, error = self.apply_files(index, files)
        if error is not None:
            status = "failed"
        self.record(index, status, outputs, continue_on_error=continue_on_error)
        return error

    def apply_files(self, index: int, files: RuntimeFiles) -> tuple[dict[str, str], str | None]:
        """Apply one process's $GITHUB_ENV, $GITHUB_PATH and $GITHUB_STEP_SUMMARY to the job (a
        summary is appended to step `index`'s); its $GITHUB_OUTPUT values, and an error message
        when a file is malformed."""
        error: str | None = None
        outputs, self._command_outputs = self._command_outputs, {}
        try:
            outputs.update(parse_key_values(files.output, "GITHUB_OUTPUT"))
            self.env.update(parse_key_values(files.env, "GITHUB_ENV"))
        except FileFormatError as exc:
            error = str(exc)
        for line in reversed(files.path.splitlines()):
            if line.strip():
                self.path.insert(0, line.strip())
        if files.summary.strip():
            self.summaries[index] = self.summaries.get(index, "") + files.summary
        return outputs, error

    def record(
        self, index: int, status: str, outputs: Mapping[str, str], *, continue_on_error: bool
    ) -> None:
        """The step's result as the `steps` context and the job's status see it."""
        outputs = {**self.step_outputs.get(index, {}), **outputs}
        self.step_outputs[index] = outputs
        outcome = {"success": "success", "skipped": "skipped", "cancelled": "cancelled"}.get(
            status, "failure"
        )
        conclusion = "success" if outcome == "failure" and continue_on_error else outcome
        if status == "cancelled":
            self.cancelled = True
        elif conclusion == "failure":
            self.failed = True
        spec = self.specs.get(index)
        if spec is not None and spec.id is not None:
            self.results[spec.id] = _StepResult(outputs, outcome, conclusion)

    # --- steps as sequences of invocations (actions) -------------------------------------------

    def session(self, step: StepRun, *, base_path: str) -> StepSession:
        """The step as a sequence of requests to the runner (app/workflow/session.py)."""
        from app.workflow.session import StepSession

        return StepSession(self, step, base_path=base_path)

    async def fetch_action(self, uses: str) -> FetchedAction | ActionError:
        """An action met at run time (inside a composite action): fetched, or why not."""
        if self._fetch is None:
            return ActionError(f"{uses}: actions from git are not available here")
        try:
            return await self._fetch(uses)
        except ActionError as exc:
            return exc

    def next_files(self, index: int) -> dict[str, str]:
        """Runtime file paths (in RUNNER_TEMP) for one invocation of step `index`: fresh ones,
        or the job's shared ones with `reuse_files`."""
        if self.reuse_files:
            return {name: f"{self.temp}/{name.lower()}" for name in INVOCATION_FILES}
        self._sequence += 1
        return {
            name: f"{self.temp}/{name.lower()}-{index}-{self._sequence}"
            for name in INVOCATION_FILES
        }

    def step_path(self, path: Path) -> str:
        """Where a step sees a path of the executor's actions cache."""
        if self.actions_dir is not None and self.actions_cache is not None:
            with contextlib.suppress(ValueError):
                return f"{self.actions_dir}/{path.relative_to(self.actions_cache)}"
        return str(path)

    @property
    def unsecure_commands(self) -> bool:
        """`::set-env` / `::add-path` allowed (GitHub's ACTIONS_ALLOW_UNSECURE_COMMANDS)."""
        return self.env.get("ACTIONS_ALLOW_UNSECURE_COMMANDS", "").lower() == "true"

    def command_env(self, name: str, value: str) -> None:
        self.env[name] = value

    def command_path(self, path: str) -> None:
        self.path.insert(0, path)

    def command_output(self, name: str, value: str) -> None:
        """`::set-output name=x::value` (deprecated on GitHub, still honoured): an output of the
        process running now, collected with its $GITHUB_OUTPUT when it ends (`apply_files`)."""
        self._command_outputs[name] = value

    def job_outputs(self) -> dict[str, str]:
        """`outputs:` evaluated at the job's end; one that fails to evaluate is left empty."""
        contexts = self.context()
        result: dict[str, str] = {}
        for name, template in self.output_templates.items():
            try:
                result[name] = ex.interpolate(template, contexts)
            except ex.ExpressionError:
                result[name] = ""
        return result


def _flag(value: bool | str, contexts: Mapping[str, Any], status: ex.Status) -> bool:
    if isinstance(value, bool):
        return value
    return ex.truthy(ex.evaluate_template(value, contexts, status=status))


def _number(
    value: float | str | None, contexts: Mapping[str, Any], status: ex.Status
) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    result = ex.evaluate_template(value, contexts, status=status)
    try:
        number = float(result)
    except (TypeError, ValueError):
        raise ex.ExpressionEvalError(f"timeout-minutes must be a number, not {result!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ex.ExpressionEvalError(f"timeout-minutes must be greater than 0, not {result!r}")
    return number
