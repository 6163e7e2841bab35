"""Pure helpers of the Kubernetes runner: names, the in-pod step script and its marker parser.

The pod runs one generated POSIX sh script that executes the job's steps in order and prints a
marker line around each step. Markers carry a token derived from the build id and a secret held by
the executor, so text a step prints cannot forge a step boundary or a result, and a replica that
re-attaches after a restart can recompute the token.

Values never enter the script text: environment values reach the pod as container env entries
(secrets as `secretKeyRef`), and only step scripts, working directories and variable *names*
(validated as shell identifiers) are spliced in, each single-quoted.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.runners.base import StepOutcome, StepRun

WORKSPACE = "/workspace"
MAX_NAME = 63
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MARKER_HEAD = b"\n##[ci-executor:"
# A marker line longer than this without its newline is step output that merely looks alike.
_MAX_MARKER_LINE = 200


# ---------------------------------------------------------------- names


def slug(text: str, max_len: int = 40) -> str:
    """Lowercase DNS-1123 label fragment of `text` ("test (3.11)" -> "test-3-11"); may be ''."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out[:max_len].strip("-")


def _hash8(build_id: int, job_name: str, installation: str) -> str:
    key = f"{installation}\0{build_id}\0{job_name}"
    return hashlib.sha256(key.encode()).hexdigest()[:8]


def installation_id(marker_secret: str) -> str:
    """Tells apart executor installations sharing a namespace (their build ids overlap)."""
    return hashlib.sha256(f"installation:{marker_secret}".encode()).hexdigest()[:10]


def k8s_job_name(build_id: int, job_name: str, installation: str = "") -> str:
    """`ci-<build>-<slug>-<hash8>`: deterministic, DNS-1123, at most 63 characters.

    The hash keeps names unique when two job names share a slug ("a b" and "a-b"), and across
    installations: build 1 of one executor database must not find build 1 of another's Job."""
    head = f"ci-{build_id}-"
    tail = _hash8(build_id, job_name, installation)
    room = MAX_NAME - len(head) - len(tail) - 1
    part = slug(job_name, max(room, 0))
    return f"{head}{part}-{tail}" if part else f"{head}{tail}"


def job_label(job_name: str) -> str:
    """A valid label value naming the job (the real name goes into an annotation)."""
    return slug(job_name, MAX_NAME) or "job"


def secret_name(build_id: int, installation: str = "") -> str:
    return f"ci-{build_id}-{installation}-secrets" if installation else f"ci-{build_id}-secrets"


def marker_token(secret: str, build_id: int) -> str:
    return hmac.new(secret.encode(), f"build:{build_id}".encode(), hashlib.sha256).hexdigest()[:32]


def secret_key(secret: str, name: str, value: str) -> str:
    """Key of one masked value in the build's Secret. Keyed by an HMAC (not a bare hash) so the pod
    spec does not expose a fingerprint of a low-entropy secret; same name+value -> same key."""
    digest = hmac.new(secret.encode(), f"{name}\0{value}".encode(), hashlib.sha256).hexdigest()
    return f"v-{digest[:24]}"


def sh_quote(text: str) -> str:
    """Single-quote `text` for POSIX sh: nothing inside single quotes is special but the quote."""
    return "'" + text.replace("'", "'\\''") + "'"


def k8s_escape(text: str) -> str:
    """Protect text from Kubernetes' `$(VAR)` expansion of command args and env values: `$$`
    becomes `$`, so doubling every `$` makes the container see exactly `text`."""
    return text.replace("$", "$$")


def is_env_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


# ---------------------------------------------------------------- environment


@dataclass(frozen=True)
class PodEnvVar:
    name: str  # name in the container environment
    value: str
    secret: bool  # goes through the build Secret (secretKeyRef), never as a plain value
    source_name: str  # the variable name the step sees


@dataclass(frozen=True)
class EnvPlan:
    container: tuple[PodEnvVar, ...]  # container env entries, common and per-step helpers
    per_step: dict[int, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    # step index -> (variable name, container env name holding its value)


def plan_env(steps: Sequence[StepRun], secret_names: frozenset[str]) -> EnvPlan:
    """Split the steps' environments into what every step shares (plain container env) and what
    differs (per-step helper variables `CI_STEP_ENV_<i>_<k>` that the script moves into the step).

    Raises ValueError for a variable name that is not a shell identifier: it could neither be
    exported by sh nor spliced safely into the script."""
    for step in steps:
        for name in step.env:
            if not is_env_name(name):
                raise ValueError(f"step {step.index}: invalid environment variable name {name!r}")
    common: dict[str, str] = {}
    if steps:
        first = steps[0].env
        for name, value in first.items():
            if all(s.env.get(name) == value for s in steps[1:]) and name != "CI_WORKSPACE":
                common[name] = value
    entries = [PodEnvVar(n, v, n in secret_names, n) for n, v in sorted(common.items())]
    entries.append(PodEnvVar("CI_WORKSPACE", WORKSPACE, False, "CI_WORKSPACE"))
    per_step: dict[int, tuple[tuple[str, str], ...]] = {}
    for step in steps:
        own: list[tuple[str, str]] = []
        for k, (name, value) in enumerate(sorted(step.env.items())):
            if name in common or name == "CI_WORKSPACE":
                continue
            helper = f"CI_STEP_ENV_{step.index}_{k}"
            entries.append(PodEnvVar(helper, value, name in secret_names, name))
            own.append((name, helper))
        per_step[step.index] = tuple(own)
    return EnvPlan(tuple(entries), per_step)


# ---------------------------------------------------------------- the script

_PRELUDE = r"""
__ci_mark() { printf '\n##[ci-executor:%s] %s\n' "$__ci_t" "$*"; }
__ci_main=$$
__ci_failed=0
__ci_to=0
__ci_timed=0
trap '__ci_to=1' USR1
# Collect pid $1 and all its descendants into __ci_all, freezing each (SIGSTOP) before looking
# for its children so nothing can fork away while the tree is walked. Only /proc is needed:
# busybox and coreutils images both have it, unlike setsid or job control (which needs a tty).
__ci_tree() {
  __ci_todo=$1
  __ci_all=
  while [ -n "$__ci_todo" ]; do
    for __ci_p in $__ci_todo; do kill -STOP "$__ci_p" 2>/dev/null; done
    __ci_all="$__ci_all $__ci_todo"
    __ci_next=
    for __ci_f in /proc/[0-9]*/stat; do
      { read -r __ci_l < "$__ci_f"; } 2>/dev/null || continue
      __ci_r=${__ci_l##*) }
      __ci_pp=${__ci_r#* }
      __ci_pp=${__ci_pp%% *}
      case " $__ci_todo " in
        *" $__ci_pp "*)
          __ci_c=${__ci_l%% *}
          case " $__ci_all $__ci_next " in
            *" $__ci_c "*) ;;
            *) __ci_next="$__ci_next $__ci_c" ;;
          esac ;;
      esac
    done
    __ci_todo=$__ci_next
  done
}
# Terminate pid $1 with its whole process tree; SIGKILL whatever ignores SIGTERM for 5 seconds.
__ci_kill() {
  __ci_tree "$1"
  kill -TERM $__ci_all 2>/dev/null
  kill -CONT $__ci_all 2>/dev/null
  ( sleep 5; kill -KILL $__ci_all ) </dev/null >/dev/null 2>&1 &
}
# Run step function $1 in the background with timeout $2 seconds (0: none); sets __ci_rc and
# __ci_to. The watchdog signals the main shell (USR1 interrupts `wait`) instead of killing by
# itself, so the decision "timed out" and the kill happen in one place without a race.
__ci_run() {
  __ci_to=0
  __ci_timed=0
  "$1" </dev/null 2>&1 &
  __ci_pid=$!
  __ci_wd=
  if [ "$2" -gt 0 ]; then
    ( sleep "$2"; kill -USR1 "$__ci_main" ) </dev/null >/dev/null 2>&1 &
    __ci_wd=$!
  fi
  # (stderr of `wait`: shells report "Killed"/"Terminated" there, which is not step output)
  wait "$__ci_pid" 2>/dev/null
  __ci_rc=$?
  if [ "$__ci_to" = 1 ]; then
    __ci_timed=1
    __ci_kill "$__ci_pid"
    wait "$__ci_pid" 2>/dev/null
    __ci_rc=124
  fi
  if [ -n "$__ci_wd" ]; then
    __ci_tree "$__ci_wd"
    kill -KILL $__ci_all 2>/dev/null
    wait "$__ci_wd" 2>/dev/null
  fi
}
__ci_status() {
  if [ "$__ci_timed" = 1 ]; then __ci_st=timed_out
  elif [ "$__ci_rc" = 0 ]; then __ci_st=success
  else __ci_st=failed
  fi
}
"""


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _step_block(step: StepRun, env: tuple[tuple[str, str], ...]) -> str:
    i = step.index
    lines = [f"__ci_s{i}() {{"]
    if step.working_directory:
        wd = step.working_directory
        target = wd if wd.startswith("/") else "./" + wd
        lines.append(
            f"  cd {sh_quote(target)} || {{ printf 'ci-executor: cannot enter "
            f"working-directory %s\\n' {sh_quote(wd)}; exit 1; }}"
        )
    for name, helper in env:
        lines.append(f'  export {name}="$__ci_e_{helper}"')
    if step.shell == "bash":
        lines.append(f"  exec bash -eo pipefail -c {sh_quote(step.script)}")
    else:
        lines.append(f"  exec sh -c {sh_quote(step.script)}")
    lines.append("}")
    run_if_ok = step.condition.evaluate(success=True, failure=False, cancelled=False)
    run_if_failed = step.condition.evaluate(success=False, failure=True, cancelled=False)
    timeout = max(1, math.ceil(step.timeout_seconds)) if step.timeout_seconds else 0
    lines.append(
        f'if [ "$__ci_failed" = 0 ]; then __ci_go={_flag(run_if_ok)}; '
        f"else __ci_go={_flag(run_if_failed)}; fi"
    )
    lines.append('if [ "$__ci_go" = 1 ]; then')
    lines.append(f"  __ci_mark step-start {i}")
    if step.shell == "bash":
        lines.append("  if command -v bash >/dev/null 2>&1; then")
        lines.append(f"    __ci_run __ci_s{i} {timeout}")
        lines.append("    __ci_status")
        lines.append("  else")
        lines.append(
            "    echo 'ci-executor: bash is not installed in this image; "
            "use an image with bash or set `shell: sh` on the step'"
        )
        lines.append("    __ci_rc=127")
        lines.append("    __ci_st=error")
        lines.append("  fi")
    else:
        lines.append(f"  __ci_run __ci_s{i} {timeout}")
        lines.append("  __ci_status")
    lines.append(f'  __ci_mark step-end {i} "$__ci_st" "$__ci_rc"')
    if not step.continue_on_error:
        lines.append('  [ "$__ci_st" = success ] || __ci_failed=1')
    lines.append("else")
    lines.append(f"  __ci_mark step-end {i} skipped -")
    lines.append("fi")
    return "\n".join(lines)


def build_script(steps: Sequence[StepRun], token: str, env: EnvPlan) -> str:
    """The container's `sh -c` script. Exit status 0 when the job succeeded, 1 otherwise."""
    if not re.fullmatch(r"[0-9a-f]+", token):
        raise ValueError("marker token must be lowercase hex")
    parts = [f"__ci_t={token}", _PRELUDE.strip("\n")]
    # Move per-step values out of the exported environment into plain shell variables, so a
    # step sees only its own values (under their real names), not every step's helpers.
    for entry in env.container:
        if entry.name != entry.source_name:
            parts.append(f'__ci_e_{entry.name}="${entry.name}"; unset {entry.name}')
    for step in steps:
        parts.append(_step_block(step, env.per_step.get(step.index, ())))
    parts.append('__ci_mark job-end "$__ci_failed"')
    parts.append('exit "$__ci_failed"')
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- parsing the log


@dataclass(frozen=True)
class Output:
    data: bytes
    end: int  # byte offset in the raw log just after `data`


@dataclass(frozen=True)
class StepStart:
    index: int
    end: int


@dataclass(frozen=True)
class StepEnd:
    index: int
    status: StepOutcome
    exit_code: int | None
    end: int


@dataclass(frozen=True)
class JobEnd:
    failed: bool
    end: int


Event = Output | StepStart | StepEnd | JobEnd
_STATUSES: dict[str, StepOutcome] = {
    "success": "success",
    "failed": "failed",
    "timed_out": "timed_out",
    "skipped": "skipped",
    "error": "error",
}


class MarkerParser:
    """Incremental splitter of the raw pod log into step output and marker events.

    Bytes that might be the beginning of a marker are held back until the line is complete, so a
    marker split across two reads is still recognised. `consumed` is how many raw log bytes were
    fed; after `feed` returns, every byte below `consumed - len(pending)` is accounted for."""

    def __init__(self, token: str) -> None:
        self._head = _MARKER_HEAD + token.encode() + b"] "
        self._buf = b""
        self._base = 0  # raw offset of self._buf[0]

    @property
    def consumed(self) -> int:
        return self._base + len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        while True:
            i = self._buf.find(self._head)
            if i < 0:
                keep = self._partial_head_len()
                self._emit(len(self._buf) - keep, events)
                return events
            self._emit(i, events)
            nl = self._buf.find(b"\n", len(self._head))
            if nl < 0:
                if len(self._buf) > len(self._head) + _MAX_MARKER_LINE:
                    self._emit(len(self._head), events)  # not a marker after all
                    continue
                return events
            event = self._parse(self._buf[len(self._head) : nl], self._base + nl + 1)
            if event is None:
                self._emit(nl, events)
                continue
            events.append(event)
            self._advance(nl + 1)

    def release_idle(self) -> list[Event]:
        """The log went quiet: a lone held newline is the output's own line end, not the start
        of a marker (the script writes a marker's newline and text in one printf). Releasing it
        lets a live viewer see the last line of a step that is still running."""
        events: list[Event] = []
        if self._buf == b"\n":
            self._emit(1, events)
        return events

    def finish(self) -> list[Event]:
        """End of the log: whatever is held back is plain output."""
        events: list[Event] = []
        self._emit(len(self._buf), events)
        return events

    def _partial_head_len(self) -> int:
        for k in range(min(len(self._head) - 1, len(self._buf)), 0, -1):
            if self._buf.endswith(self._head[:k]):
                return k
        return 0

    def _emit(self, n: int, events: list[Event]) -> None:
        if n <= 0:
            return
        events.append(Output(self._buf[:n], self._base + n))
        self._advance(n)

    def _advance(self, n: int) -> None:
        self._buf = self._buf[n:]
        self._base += n

    @staticmethod
    def _parse(line: bytes, end: int) -> Event | None:
        words = line.decode("ascii", "replace").split(" ")
        try:
            if words[0] == "step-start" and len(words) == 2:
                return StepStart(int(words[1]), end)
            if words[0] == "step-end" and len(words) == 4 and words[2] in _STATUSES:
                code = None if words[3] == "-" else int(words[3])
                return StepEnd(int(words[1]), _STATUSES[words[2]], code, end)
            if words[0] == "job-end" and len(words) == 2:
                return JobEnd(words[1] != "0", end)
        except ValueError:
            return None
        return None
