"""One step as a sequence of requests to the runner: the step invocation protocol.

A `run:` step is one process; a step that `uses:` an action is several (a composite action's
nested steps, a JavaScript action's `pre` and `main`, nested actions...). The runtime decides
them one at a time, each with the contexts as they are then (a nested `if` sees the outputs of
the nested steps before it), and the runner only executes what it is asked. Every runner drives
every step of a job that has a `JobRuntime` the same way:

    session = runtime.session(step, base_path=<the PATH steps start with>)
    request = session.send(None)
    if request is None:      # skipped (the runtime already recorded it): report it skipped
    else: report the step started, then
    while request is not None:
        reply = None
        Invocation: create each path of `request.files` empty; if `request.script_name`, write
            `request.script` to `<runtime.temp>/<script_name>`; make each host directory of
            `request.readable` readable by the process (the actions cache; same path, or under
            `actions_dir` given to `runtime.start`); if `request.argv[0]` is not found on
            `request.env["PATH"]`, reply `Ran("failed", None, message=request.missing)`; else run
            `request.argv` with exactly `request.env` in `request.working_directory` (relative to
            the workspace; None: the workspace) for at most `request.timeout_seconds`, its output
            going to the step's log (after a `request.label` line when not empty), and reply
            `Ran(status, exit_code, files=RuntimeFiles read back from request.files)`
            (status: success, failed, cancelled, timed_out or error, as for a whole step).
        Log: write `request.text` to the step's log.
        ReadFile / FetchAction: reply = await session.load(request, read_text), where
            `read_text(path)` returns the text of a file the step can see, or None.
        request = session.send(reply)
    session.end: the step's status, exit code, continue-on-error and message, for the runner's
        report (the runtime already recorded outputs, env, path and summary).

Remote actions are pinned when the build is created (app/services/plan.py): their trees live in
the executor's actions cache (`ACTIONS_CACHE_DIR/<owner>/<repo>/<commit>`), named in
`Invocation.readable`. Local actions (`uses: ./path`) are read from the workspace at run time
through `ReadFile`. A JavaScript action's `post` of a top-level remote step runs as its own
"Post <name>" step row at the job's end (added at plan time); other posts run at the end of the
step that used the action.
"""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.actions.errors import ActionError
from app.actions.fetch import FetchedAction
from app.actions.manifest import ActionManifest, parse_manifest
from app.actions.runtime import DEFAULT_POST_IF, DEFAULT_PRE_IF, parse_env_file
from app.workflow import expressions as ex
from app.workflow.invocation import (
    FetchAction,
    Invocation,
    Log,
    Ran,
    ReadFile,
    Request,
    StepEnd,
    github_like,
)
from app.workflow.parser import CHECKOUT
from app.workflow.runtime import (
    JobRuntime,
    _flag,
    _number,
    _StepResult,
    input_name,
    script_suffix,
    shell_command,
)

if TYPE_CHECKING:
    from app.runners.base import StepRun

MAX_DEPTH = 10  # composite actions nested deeper are refused (GitHub's limit is 10 too)


@dataclass
class _Outcome:
    status: str
    exit_code: int | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    message: str | None = None

    @property
    def stops(self) -> bool:
        return self.status in ("cancelled", "timed_out", "error")


@dataclass
class _Scope:
    """Where steps run: the job's top level, or inside a composite action."""

    index: int  # the top-level step all of this belongs to
    layer: dict[str, str]  # env added by the calling steps (outer first), evaluated
    timeout: float | None
    top: bool = True
    inputs: dict[str, Any] = field(default_factory=dict)
    results: dict[str, _StepResult] = field(default_factory=dict)
    action_path: str = ""
    failed: bool = False
    depth: int = 0
    readable: tuple[str, ...] = ()  # the action's tree, for its nested `run` steps


@dataclass(frozen=True)
class _Loaded:
    label: str
    manifest: ActionManifest
    directory: str  # the action's directory as the step sees it
    root: str  # the tree its entry points must stay inside
    readable: tuple[str, ...] = ()
    fetched: FetchedAction | None = None


@dataclass(frozen=True)
class _Post:
    loaded: _Loaded
    with_values: dict[str, str]
    scope: _Scope
    state: dict[str, str]
    step_id: str


Flow = Generator[Request, Any, _Outcome]


class StepSession:
    def __init__(self, runtime: JobRuntime, step: StepRun, *, base_path: str) -> None:
        self.rt = runtime
        self.step = step
        self.base_path = base_path
        self.end = StepEnd("skipped")
        self._flow = self._drive()
        self._started = False
        self._posts: list[_Post] = []  # run at the end of this step, newest first

    def send(self, reply: Any) -> Request | None:
        try:
            if not self._started:
                self._started = True
                return next(self._flow)
            return self._flow.send(reply)
        except StopIteration:
            return None

    async def load(
        self, request: ReadFile | FetchAction, read_text: Callable[[str], Awaitable[str | None]]
    ) -> Any:
        if isinstance(request, ReadFile):
            return await read_text(request.path)
        return await self.rt.fetch_action(request.uses)

    # --- the calling step ------------------------------------------------------------------------

    def _drive(self) -> Generator[Request, Any, None]:
        index = self.step.index
        if index in self.rt.posts:
            yield from self._post_row(self.rt.posts[index])
            return
        spec = self.rt.specs.get(index)
        if spec is None or spec.uses is None or CHECKOUT.fullmatch(spec.uses):
            yield from self._plain()
            return
        yield from self._uses_step()

    def _close(self, outcome: _Outcome, continue_on_error: bool) -> None:
        self.rt.record(
            self.step.index, outcome.status, outcome.outputs, continue_on_error=continue_on_error
        )
        self.end = StepEnd(outcome.status, outcome.exit_code, continue_on_error, outcome.message)

    def _skip(self) -> None:
        self.rt.record(self.step.index, "skipped", {}, continue_on_error=False)
        self.end = StepEnd("skipped")

    def _plain(self) -> Generator[Request, Any, None]:
        rt, step = self.rt, self.step
        files = rt.next_files(step.index)
        prepared = rt.prepare(step, files=files, temp=rt.temp, base_path=self.base_path)
        if not prepared.run:
            self._skip()
            return
        if prepared.error is not None:
            yield Log(f"{prepared.error}\n")
            self._close(_Outcome("failed"), prepared.continue_on_error)
            return
        program = prepared.argv[0] if prepared.argv else ""
        ran: Ran = yield Invocation(
            label="",
            argv=prepared.argv,
            script=prepared.script,
            script_name=prepared.script_name,
            env=prepared.env,
            working_directory=prepared.working_directory,
            timeout_seconds=prepared.timeout_seconds,
            files=files,
            missing=f"the shell {program!r} is not installed on this runner",
        )
        outcome = yield from self._absorb(ran, step.index)
        self._close(outcome, prepared.continue_on_error)

    def _absorb(self, ran: Ran, index: int) -> Generator[Request, Any, _Outcome]:
        """Apply one process's runtime files; its outcome with its outputs."""
        if ran.message and ran.status != "error":
            yield Log(f"{ran.message}\n")
        outputs, problem = self.rt.apply_files(index, ran.files)
        status = ran.status
        if problem is not None:
            yield Log(f"{problem}\n")
            status = "failed" if status == "success" else status
        return _Outcome(status, ran.exit_code, outputs, ran.message)

    def _uses_step(self) -> Generator[Request, Any, None]:
        rt, step = self.rt, self.step
        spec = rt.specs[step.index]
        assert spec.uses is not None
        status = rt.status()
        step_id = spec.id or f"__{_slug(spec.uses)}"
        rt.contexts["github"] = {**rt.contexts.get("github", {}), "action": step_id}
        contexts = rt.context()
        hf = self._hash_files()
        try:
            if not ex.condition(spec.condition.source, contexts, status=status, hash_files=hf):
                self._skip()
                return
            layer = {
                k: ex.interpolate(v, contexts, status=status, hash_files=hf)
                for k, v in spec.env.items()
            }
            step_contexts = rt.context({**rt.env, **layer})
            with_values = {
                k: ex.interpolate(v, step_contexts, status=status, hash_files=hf)
                for k, v in spec.with_.items()
            }
            continue_on_error = _flag(spec.continue_on_error, step_contexts, status)
            minutes = _number(spec.timeout_minutes, step_contexts, status)
        except ex.ExpressionError as exc:
            yield Log(f"Error evaluating the step's expressions: {exc}\n")
            self._close(_Outcome("failed"), step.continue_on_error)
            return
        timeout = minutes * 60 if minutes else step.timeout_seconds
        scope = _Scope(index=step.index, layer=layer, timeout=timeout)
        outcome = yield from self._action(spec.uses, with_values, scope, step_id)
        outcome = yield from self._inline_posts(outcome)
        self._close(outcome, continue_on_error)

    # --- actions ---------------------------------------------------------------------------------

    def _action(self, uses: str, with_values: dict[str, str], scope: _Scope, step_id: str) -> Flow:
        if scope.depth >= MAX_DEPTH:
            yield Log(f"{uses}: composite actions are nested more than {MAX_DEPTH} deep\n")
            return _Outcome("failed")
        loaded = yield from self._load(uses, scope)
        if isinstance(loaded, str):
            yield Log(f"{loaded}\n")
            return _Outcome("failed")
        manifest = loaded.manifest
        if manifest.kind == "docker":
            yield Log(f"{uses}: Docker actions (runs.using: docker) are not supported\n")
            return _Outcome("failed")
        for name in manifest.missing_inputs(with_values):
            yield Log(f"::warning::{uses}: input required and not supplied: {name}\n")
        if manifest.kind == "composite":
            return (yield from self._composite(loaded, with_values, scope))
        return (yield from self._node(loaded, with_values, scope, step_id))

    def _load(self, uses: str, scope: _Scope) -> Generator[Request, Any, _Loaded | str]:
        if uses.startswith(("./", "../")) or uses == ".":
            directory = posixpath.normpath(posixpath.join(self.rt.workspace, uses))
            workspace = posixpath.normpath(self.rt.workspace)
            if directory != workspace and not directory.startswith(workspace + "/"):
                return f"{uses}: a local action must be inside the workspace"
            for name in ("action.yml", "action.yaml"):
                text: str | None = yield ReadFile(f"{directory}/{name}")
                if text is not None:
                    try:
                        manifest = parse_manifest(text, Path(directory) / name, uses)
                    except ActionError as exc:
                        return str(exc)
                    return _Loaded(uses, manifest, directory, directory)
            return (
                f"{uses}: no action.yml or action.yaml in {directory} (a local action is read "
                "from the workspace: check out the repository first)"
            )
        fetched = self.rt.actions.get(uses) if scope.top else None
        if fetched is None:
            reply = yield FetchAction(uses)
            if isinstance(reply, ActionError):
                return str(reply)
            fetched = reply
        return _Loaded(
            uses,
            fetched.manifest,
            self.rt.step_path(fetched.directory),
            self.rt.step_path(fetched.root),
            (str(fetched.root),),
            fetched,
        )

    def _contexts(self, scope: _Scope, env: dict[str, str]) -> dict[str, Any]:
        contexts = self.rt.context(env)
        if not scope.top:
            steps = {
                sid: {"outputs": r.outputs, "outcome": r.outcome, "conclusion": r.conclusion}
                for sid, r in scope.results.items()
            }
            github = {**contexts["github"], "action_path": scope.action_path}
            contexts.update(steps=steps, inputs=scope.inputs, github=github)
        return contexts

    def _status(self, scope: _Scope) -> ex.Status:
        failed = self.rt.failed or scope.failed
        cancelled = self.rt.cancelled
        return ex.Status(success=not failed and not cancelled, failure=failed, cancelled=cancelled)

    def _hash_files(self) -> ex.HashFiles | None:
        """`hashFiles()` over the workspace (`with: key: ${{ hashFiles('**/lock') }}`)."""
        rt = self.rt
        return rt.hash_files(rt.env.get("GITHUB_WORKSPACE", ".")) if rt.hash_files else None

    def _env(self, layer: dict[str, str], files: dict[str, str]) -> dict[str, str]:
        """A process's environment: the step's, the job's as it is now, the calling steps'."""
        rt = self.rt
        env = {k: v for k, v in self.step.env.items() if k not in rt.env}
        env.update(rt.env)
        env.update(layer)
        env.update(rt.overrides)
        env.update(files)
        if rt.path:
            env["PATH"] = ":".join([*rt.path, env.get("PATH") or self.base_path])
        return env

    def _composite(self, loaded: _Loaded, with_values: dict[str, str], scope: _Scope) -> Flow:
        manifest = loaded.manifest
        inputs: dict[str, Any] = {i.name: i.default or "" for i in manifest.inputs}
        inputs.update(with_values)
        inner = _Scope(
            index=scope.index,
            layer={**scope.layer, **{input_name(k): str(v) for k, v in inputs.items()}},
            timeout=scope.timeout,
            top=False,
            inputs=inputs,
            action_path=loaded.directory,
            depth=scope.depth + 1,
            readable=loaded.readable,
        )
        inner.layer["GITHUB_ACTION_PATH"] = loaded.directory
        first_failure: _Outcome | None = None
        for position, raw in enumerate(manifest.steps):
            if not isinstance(raw, dict):
                yield Log(f"{loaded.label}: runs.steps[{position}] must be a mapping\n")
                return _Outcome("failed")
            outcome = yield from self._nested(raw, position, inner, loaded.label)
            if outcome.stops:
                return outcome
            tolerated = _tolerated(raw, outcome)
            step_id = raw.get("id")
            if isinstance(step_id, str) and step_id:
                failed = outcome.status == "failed"
                conclusion = "success" if failed and tolerated else _outcome_name(outcome.status)
                inner.results[step_id] = _StepResult(
                    outcome.outputs, _outcome_name(outcome.status), conclusion
                )
            if outcome.status == "failed" and not tolerated:
                inner.failed = True
                first_failure = first_failure or outcome
        contexts = self._contexts(inner, self._env(inner.layer, {}))
        outputs: dict[str, str] = {}
        for name, declared in manifest.outputs.items():
            template = declared.get("value") if isinstance(declared, dict) else None
            try:
                outputs[str(name)] = ex.interpolate(str(template or ""), contexts)
            except ex.ExpressionError as exc:
                yield Log(f"{loaded.label}: output {name!r}: {exc}\n")
                outputs[str(name)] = ""
        if first_failure is not None:
            return _Outcome("failed", first_failure.exit_code, outputs)
        return _Outcome("success", 0, outputs)

    def _nested(self, raw: dict[str, Any], position: int, scope: _Scope, label: str) -> Flow:
        name = str(raw.get("name") or raw.get("id") or raw.get("uses") or f"step {position + 1}")
        hf = self._hash_files()
        try:
            contexts = self._contexts(scope, self._env(scope.layer, {}))
            status = self._status(scope)
            if not ex.condition(str(raw.get("if") or ""), contexts, status=status, hash_files=hf):
                return _Outcome("skipped")
            raw_env = raw.get("env") or {}
            layer = dict(scope.layer)
            for key, value in raw_env.items() if isinstance(raw_env, dict) else ():
                layer[str(key)] = ex.interpolate(str(value), contexts, status=status, hash_files=hf)
            contexts = self._contexts(scope, self._env(layer, {}))
            if "uses" in raw:
                raw_with = raw.get("with") or {}
                with_values = {
                    str(k): ex.interpolate(_text(v), contexts, status=status, hash_files=hf)
                    for k, v in (raw_with.items() if isinstance(raw_with, dict) else ())
                }
            else:
                script = ex.interpolate(
                    str(raw.get("run") or ""), contexts, status=status, hash_files=hf
                )
                directory = raw.get("working-directory")
                if directory is not None:
                    directory = ex.interpolate(
                        str(directory), contexts, status=status, hash_files=hf
                    )
        except ex.ExpressionError as exc:
            yield Log(f"{label} ({name}): error evaluating expressions: {exc}\n")
            return _Outcome("failed")
        step_id = str(raw.get("id") or f"__{position}")
        if "uses" in raw:
            child = _Scope(
                scope.index, layer, scope.timeout, False, scope.inputs, scope.results,
                scope.action_path, depth=scope.depth, readable=scope.readable,
            )  # fmt: skip
            return (yield from self._action(str(raw["uses"]), with_values, child, step_id))
        if "run" not in raw:
            yield Log(f"{label} ({name}): a composite step needs `run` or `uses`\n")
            return _Outcome("failed")
        shell = raw.get("shell")
        if not isinstance(shell, str) or not shell.strip():
            yield Log(f"{label} ({name}): `shell` is required for `run` steps of a composite\n")
            return _Outcome("failed")
        files = self.rt.next_files(scope.index)
        script_name = f"{posixpath.basename(files['GITHUB_OUTPUT'])}{script_suffix(shell)}"
        env = {**self._env(layer, files), "GITHUB_ACTION": step_id}
        ran: Ran = yield Invocation(
            label=f"▶ {label}: {name}",
            argv=shell_command(shell, f"{self.rt.temp}/{script_name}"),
            script=script,
            script_name=script_name,
            env=env,
            working_directory=directory,
            timeout_seconds=scope.timeout,
            files=files,
            readable=scope.readable,
            missing=f"the shell {shell!r} is not installed on this runner",
        )
        return (yield from self._absorb(ran, scope.index))

    # --- JavaScript actions ----------------------------------------------------------------------

    def _node(
        self, loaded: _Loaded, with_values: dict[str, str], scope: _Scope, step_id: str
    ) -> Flow:
        manifest = loaded.manifest
        state: dict[str, str] = {}
        phases = [
            ("pre", manifest.pre, manifest.pre_if or DEFAULT_PRE_IF),
            ("main", manifest.main, ""),
        ]
        outputs: dict[str, str] = {}
        for phase, entry, condition in phases:
            if not entry:
                continue
            if condition:
                try:
                    contexts = self._contexts(scope, self._env(scope.layer, {}))
                    if not ex.condition(condition, contexts, status=self._status(scope)):
                        continue
                except ex.ExpressionError as exc:
                    yield Log(f"{loaded.label}: {phase}-if: {exc}\n")
                    return _Outcome("failed")
            post = _Post(loaded, with_values, scope, state, step_id)
            outcome = yield from self._phase(post, phase, entry)
            outputs.update(outcome.outputs)
            if outcome.status != "success":
                outcome.outputs = outputs
                self._defer_post(post)
                return outcome
        self._defer_post(_Post(loaded, with_values, scope, state, step_id))
        return _Outcome("success", 0, outputs)

    def _defer_post(self, post: _Post) -> None:
        if not post.loaded.manifest.post:
            return
        if post.scope.top and post.scope.index in self.rt.posts.values():
            self.rt.pending_posts[post.scope.index] = post  # its own "Post" row at the job's end
        else:
            self._posts.append(post)

    def _phase(self, post: _Post, phase: str, entry: str) -> Flow:
        loaded = post.loaded
        script = posixpath.normpath(posixpath.join(loaded.directory, entry))
        if not script.startswith(loaded.root.rstrip("/") + "/"):
            yield Log(f"{loaded.label}: runs.{phase} points outside the action\n")
            return _Outcome("failed")
        files = self.rt.next_files(post.scope.index)
        env = self._env(post.scope.layer, files)
        fetched = loaded.fetched
        server = env.get("GITHUB_SERVER_URL", "")
        env.update(
            {
                "GITHUB_ACTION": post.step_id,
                "GITHUB_ACTION_PATH": loaded.directory,
                "GITHUB_ACTION_REPOSITORY": (
                    f"{fetched.ref.owner}/{fetched.ref.repo}" if fetched else ""
                ),
                "GITHUB_ACTION_REF": fetched.ref.ref if fetched else "",
                **self.rt.action_env,
                # The toolkit refuses GHES for artifacts and picks its cache protocol by this.
                "GITHUB_SERVER_URL": server if github_like(server) else "https://github.com",
                **loaded.manifest.input_env(post.with_values),
                **{f"STATE_{k}": v for k, v in post.state.items()},
            }
        )
        ran: Ran = yield Invocation(
            label=f"▶ {loaded.label} ({phase})" if phase != "main" or not post.scope.top else "",
            argv=("node", script),
            script="",
            script_name="",
            env=env,
            working_directory=None,
            timeout_seconds=post.scope.timeout,
            files=files,
            readable=loaded.readable,
            missing=(
                f"{loaded.label} is a JavaScript action (runs.using: {loaded.manifest.using}) "
                "and needs `node`, which is not installed in this job's image or on this host"
            ),
        )
        try:
            post.state.update(parse_env_file(ran.files.state))
        except ActionError as exc:
            yield Log(f"GITHUB_STATE: {exc}\n")
            return _Outcome("failed", ran.exit_code)
        return (yield from self._absorb(ran, post.scope.index))

    def _run_post(self, post: _Post, status: ex.Status) -> Flow:
        manifest = post.loaded.manifest
        assert manifest.post is not None
        try:
            contexts = self._contexts(post.scope, self._env(post.scope.layer, {}))
            if not ex.condition(manifest.post_if or DEFAULT_POST_IF, contexts, status=status):
                return _Outcome("skipped")
        except ex.ExpressionError as exc:
            yield Log(f"{post.loaded.label}: post-if: {exc}\n")
            return _Outcome("failed")
        return (yield from self._phase(post, "post", manifest.post))

    def _inline_posts(self, outcome: _Outcome) -> Flow:
        """Posts of actions used inside this step, newest first, at its end."""
        if outcome.stops:
            return outcome
        while self._posts:
            post = self._posts.pop()
            failed = self.rt.failed or outcome.status == "failed"
            status = ex.Status(success=not failed, failure=failed)
            result = yield from self._run_post(post, status)
            if result.stops:
                return result
            if result.status == "failed" and outcome.status == "success":
                outcome = _Outcome("failed", result.exit_code, outcome.outputs)
        return outcome

    def _post_row(self, main_index: int) -> Generator[Request, Any, None]:
        post = self.rt.pending_posts.pop(main_index, None)
        if post is None:  # the action's step did not run
            self._skip()
            return
        assert isinstance(post, _Post)
        # Its files and summary are this row's; its post-if sees the job's status now.
        post = replace(post, scope=replace(post.scope, index=self.step.index))
        outcome = yield from self._run_post(post, self.rt.status())
        if outcome.status == "skipped":
            self._skip()
            return
        self._close(_Outcome(outcome.status, outcome.exit_code, {}, outcome.message), False)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _slug(uses: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in uses.split("@")[0]).strip("_") or "action"


def _outcome_name(status: str) -> str:
    return {"success": "success", "skipped": "skipped", "cancelled": "cancelled"}.get(
        status, "failure"
    )


def _tolerated(raw: dict[str, Any], outcome: _Outcome) -> bool:
    value = raw.get("continue-on-error", False)
    return outcome.status == "failed" and (value is True or str(value).lower() == "true")
