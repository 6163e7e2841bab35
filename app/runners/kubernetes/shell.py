"""The POSIX sh the runner puts in the pod: PID 1, the per-step program sent through exec, and
the small commands to stop a step or end the pod.

Layout in the pod (`$CI_RUN_DIR`, an emptyDir): `<i>.sh` the step's script, `<i>.log` its
output (created first and only once: the claim that starts a step at most once), `<i>.pgid`
its process group, `<i>.rc` its exit code (written when it ends, read only when the runner
re-attaches after losing the exec stream), `exit` (the runner is done: PID 1 ends and the pod
succeeds).

Values never reach the pod spec: the step's environment and script travel on the exec's stdin,
and `sh -c 'eval "$(head -c N)"'` reads exactly N bytes of it, so no stdin close is needed
(the v4 channel protocol has none) and no argv length limit applies.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Literal

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names the pod sets itself; a step's environment must not point them elsewhere. A step's own
# PATH is honoured (GitHub lets `env: PATH:` replace it); the image's is "$PATH" (BASE_PATH).
_POD_OWNED = frozenset({"CI_WORKSPACE", "CI_RUN_DIR", "HOME", "HOSTNAME"})

# PID 1. Without a TERM handler, a container's PID 1 ignores the kubelet's SIGTERM and the step
# runs on until SIGKILL after the grace period. This one forwards TERM to every step's process
# group, waits for them to exit (the kubelet's SIGKILL bounds the wait), then exits.
# `kill -SIG -PGID`, never `kill -SIG -- -PGID`: dash's kill (/bin/sh of Debian and Ubuntu
# images) refuses `--` ("Illegal number") and signals nothing; with stderr discarded, PID 1
# exited at once and the runtime SIGKILLed the steps (no TERM trap ran). busybox's kill only
# complains about `--`.
INIT = r"""
d="$CI_RUN_DIR"
mkdir -p "$d" "$HOME" || exit 1
# The workspace emptyDir belongs to root (group fsGroup): git refuses a repository at its top
# ("dubious ownership") unless it is a safe.directory, set in the (writable) HOME's global
# config. `*`: the pod has one user, so a repository owned by another (root's volume, a local
# repository to fetch from) is no other tenant's.
[ -e "$HOME/.gitconfig" ] || printf '[safe]\n\tdirectory = *\n' > "$HOME/.gitconfig"
stop() {
  for f in "$d"/*.pgid; do [ -f "$f" ] && kill -TERM "-$(cat "$f")" 2>/dev/null; done
  while :; do
    alive=0
    for f in "$d"/*.pgid; do
      [ -f "$f" ] && kill -0 "-$(cat "$f")" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && exit 143
    sleep 0.1 2>/dev/null || sleep 1
  done
}
trap stop TERM INT
while [ ! -e "$d/exit" ]; do sleep 1 & wait $!; done
exit 0
"""

# Prints the step's log from byte `off` as it grows, until `<i>.rc` exists and all is printed.
_FOLLOW = r"""
f="$d/$i.log"
while :; do
  ended=0; [ -e "$d/$i.rc" ] && ended=1
  size=0; [ -f "$f" ] && size=$(wc -c < "$f")
  if [ "$size" -gt "$off" ]; then
    tail -c +$((off + 1)) "$f" | head -c $((size - off)); off=$size
  fi
  [ "$ended" = 1 ] && break
  # Quick while output flows, slower when the step is quiet (many steps poll at once).
  if [ "$size" -gt "${last:-0}" ]; then t=0.1; else t=0.4; fi; last=$size
  sleep "$t" 2>/dev/null || sleep 1
done
"""

# Starts the step in its own session (its whole tree is one process group the runner and PID 1
# can signal), detached from the exec's output so a dropped stream cannot kill it (SIGPIPE).
# The exit code the runner trusts is this program's own, from `wait` on the supervisor: output
# or files the step writes cannot change it.
_START = r"""
(
  S=$(command -v setsid 2>/dev/null)
  cd "$CI_WORKSPACE" && cd "$wd" 2>>"$d/$i.log" || {
    echo "ci-executor: working-directory $wd_name does not exist" >> "$d/$i.log"; rc=1
  }
  P0=$PATH
  __ci_env
  if [ -z "${rc:-}" ] && ! command -v "$shell_name" >/dev/null 2>&1; then
    PATH=$P0
    if [ -n "$missing" ]; then
      printf '%s\n' "$missing" >> "$d/$i.log"
    else
      printf '%s\n' "ci-executor: the shell '$shell_name' is not installed on this runner" \
        "($shell_name is not installed in the job's image); use \`shell: sh\` or an image" \
        "that has $shell_name" | tr '\n' ' ' >> "$d/$i.log"
      echo >> "$d/$i.log"
    fi
    rc=127
  fi
  if [ -z "${rc:-}" ]; then
    $S "$@" < /dev/null >> "$d/$i.log" 2>&1 &
    p=$!
    PATH=$P0
    echo "$p" > "$d/$i.pgid"
    wait "$p"; rc=$?
    kill -KILL "-$p" 2>/dev/null
  fi
  echo "$rc" > "$d/$i.rc.tmp" && mv "$d/$i.rc.tmp" "$d/$i.rc"
  exit "$rc"
) < /dev/null > /dev/null 2>&1 &
sup=$!
"""

Shell = Literal["bash", "sh"]
# Stands for the image's own PATH in values the runner builds before knowing it.
BASE_PATH = "/__ci_image_path__"
_PATH_ROOTS = (("/ci", "CI_ROOT"), ("/workspace", "CI_WORKSPACE"))
# follow_program's exit code when the step never started (its start program was lost in transit).
NOT_STARTED = 254
# start_program's exit code when the step was already started by an earlier copy of it.
ALREADY_STARTED = 253
SHELL_COMMANDS: dict[str, tuple[str, ...]] = {
    "bash": ("bash", "--noprofile", "--norc", "-eo", "pipefail"),
    "sh": ("sh", "-e"),
}


def sh_quote(text: str) -> str:
    """Single-quote `text` for POSIX sh: nothing inside single quotes is special but the quote."""
    return "'" + text.replace("'", "'\\''") + "'"


def k8s_escape(text: str) -> str:
    """Protect text from Kubernetes' `$(VAR)` expansion of command args and env values: `$$`
    becomes `$`, so doubling every `$` makes the container see exactly `text`."""
    return text.replace("$", "$$")


def is_env_name(name: str) -> bool:
    return bool(_NAME_RE.match(name))


def exec_argv(program: bytes) -> list[str]:
    """The exec command that reads and runs `program` from stdin."""
    return ["sh", "-c", 'eval "$(head -c "$1")"', "ci-executor", str(len(program))]


def _header(key: int | str, offset: int) -> str:
    """`key` names a process's files in $CI_RUN_DIR: the step index, or `<index>-<n>` for the
    n-th process of a step that runs several (an action's phases, a composite's steps)."""
    return f'd="$CI_RUN_DIR"; i={key}; off={offset}\n'


def value_expr(value: str) -> str:
    """`value` as a sh word. Paths under the pod's mounts become `"$CI_ROOT"'/rest'` (resp.
    `$CI_WORKSPACE`), so they resolve wherever the mounts really are (the same paths in a
    cluster; the emulator's local directories in tests); BASE_PATH stands for the image's PATH."""
    if BASE_PATH in value:
        return '"$PATH"'.join(value_expr(part) for part in value.split(BASE_PATH))
    for root, variable in _PATH_ROOTS:
        if value == root or value.startswith(root + "/"):
            return f'"${variable}"' + sh_quote(value[len(root) :])
    return sh_quote(value)


def _directory_expr(directory: str) -> str:
    """A working directory as a sh word: relative to the workspace (`./` first, so that a name
    such as `-x` is no option of cd), or absolute (`${{ github.workspace }}/sub`, `$RUNNER_TEMP`),
    with the pod's mounts resolved like any other value."""
    if directory.startswith("/"):
        return value_expr(directory)
    return sh_quote("./" + directory)


def start_program(
    index: int | str,
    script: str,
    env: Mapping[str, str],
    working_directory: str | None,
    *,
    shell: Shell = "sh",
    argv: Sequence[str] | None = None,
    script_path: str | None = None,
    empty_files: Sequence[str] = (),
    missing: str | None = None,
) -> bytes:
    """Write the step's script, start it, stream its output from byte 0, exit with its code.

    Without `argv` the script goes to `$CI_RUN_DIR/<i>.sh` and runs with `shell`; with it (the
    workflow runtime's command line) the script goes to `script_path` and `argv` runs as given.
    `empty_files` (runtime files such as $GITHUB_OUTPUT) are created empty first. `missing` is
    the step's error when the command is not installed in the image."""
    for name in env:
        if not name or "=" in name or "\0" in name:
            raise ValueError(f"invalid environment variable name {name!r}")
    exports = "".join(
        f"export {name}={value_expr(value)}\n"
        for name, value in sorted(env.items())
        if is_env_name(name) and name not in _POD_OWNED
    )
    # Names sh cannot export (GitHub allows `MY-VAR` in $GITHUB_ENV; @actions/core reads inputs as
    # `INPUT_FETCH-DEPTH`) reach the step through `env NAME=value command`.
    odd = [
        sh_quote(f"{name}=") + value_expr(value)
        for name, value in sorted(env.items())
        if not is_env_name(name)
    ]
    delimiter = f"CI_EXECUTOR_EOF_{secrets.token_hex(8)}"
    target = value_expr(script_path) if script_path else '"$d/$i.sh"'
    words = list(argv) if argv else [*SHELL_COMMANDS[shell], "\0script"]
    command = " ".join(target if w == "\0script" else value_expr(w) for w in words)
    if odd:
        command = " ".join(["env", *odd, command])
    created = "".join(
        f'mkdir -p "$(dirname {value_expr(f)})" && : > {value_expr(f)}\n' for f in empty_files
    )
    # Everything runs from one function called on the last line: a program cut short in transit
    # (the stream broke while stdin was sent) defines nothing and runs nothing.
    parts = [
        "__ci_main() {\n",
        _header(index, 0),
        f"wd={_directory_expr(working_directory or '.')}; "
        f"wd_name={sh_quote(working_directory or '.')}; shell_name={sh_quote(words[0])}\n",
        f"missing={sh_quote(missing or '')}\n",
        f'mkdir -p "$d" "$(dirname {target})" || exit 125\n',
        # The step's claim, before anything else: its log, created only if it does not exist
        # (noclobber is O_EXCL). A copy of this program sent again (the runner re-attached
        # while the first copy was still writing the script) runs nothing and says so.
        f'( set -C; : > "$d/$i.log" ) 2>/dev/null || exit {ALREADY_STARTED}\n',
        f"cat > {target} <<'{delimiter}'\n{script}\n{delimiter}\n",
        created,
        f"__ci_env() {{\n:\n{exports}}}\n",
        f"set -- {command}\n",
        _START,
        _FOLLOW,
        'wait "$sup"; rc=$?\n',
        # Whatever the step wrote after the loop's last read (it ended between the two).
        'size=$(wc -c < "$f"); [ "$size" -gt "$off" ] && tail -c +$((off + 1)) "$f" | '
        "head -c $((size - off))\n",
        'exit "$rc"\n',
        "}\n__ci_main\n",
    ]
    return "".join(parts).encode()


def files_program(paths: Sequence[str], limit: int) -> bytes:
    """Print each file as `<n>\\n` + its first n bytes (n <= limit; 0 for a missing file)."""
    body = "".join(
        f'f={value_expr(p)}; n=0; [ -f "$f" ] && n=$(wc -c < "$f"); '
        f'[ "$n" -gt {limit} ] && n={limit}; echo "$n"; [ "$n" -gt 0 ] && head -c "$n" "$f"\n'
        for p in paths
    )
    return f"__ci_files() {{\n{body}:\n}}\n__ci_files\n".encode()


def write_files_program(files: Mapping[str, str]) -> bytes:
    """Write text files (the workflow runtime's event.json and such) into the pod."""
    body = ""
    for path, text in files.items():
        delimiter = f"CI_EXECUTOR_EOF_{secrets.token_hex(8)}"
        body += f'mkdir -p "$(dirname {value_expr(path)})"\n'
        body += f"cat > {value_expr(path)} <<'{delimiter}'\n{text}\n{delimiter}\n"
    return f"__ci_write() {{\n{body}:\n}}\n__ci_write\n".encode()


def follow_program(index: int | str, offset: int) -> bytes:
    """Re-attach to a step started earlier: stream its output from `offset` until it ends, exit
    with the code it recorded (or 255 if it never started)."""
    return (
        _header(index, offset)
        + f'[ -e "$d/$i.log" ] || exit {NOT_STARTED}\n'
        + _FOLLOW
        + 'rc=$(cat "$d/$i.rc" 2>/dev/null); case "$rc" in ""|*[!0-9]*) exit 255;; esac\n'
        + 'exit "$rc"\n'
    ).encode()


def state_program() -> bytes:
    """One line per step the pod knows: `<index> <rc or -> <log bytes>`."""
    return (
        _header(0, 0)
        + 'for f in "$d"/*.log; do [ -f "$f" ] || continue; i=${f##*/}; i=${i%.log}\n'
        + '  rc=-; [ -f "$d/$i.rc" ] && rc=$(cat "$d/$i.rc")\n'
        + '  echo "$i $rc $(wc -c < "$f")"\ndone\n'
    ).encode()


def signal_program(index: int | str, signal: Literal["TERM", "KILL"]) -> bytes:
    return (
        _header(index, 0)
        + f'p=$(cat "$d/$i.pgid" 2>/dev/null) && kill -{signal} "-$p" 2>/dev/null; exit 0\n'
    ).encode()


def copy_tree_program(destination: str, size: int) -> bytes:
    """Unpack the gzipped tar of `size` bytes that follows this program on stdin into
    `destination` (replacing it whole: unpacked aside, then moved)."""
    target = value_expr(destination)
    return (
        "__ci_copy() {\n"
        "command -v tar >/dev/null || { echo 'tar is not installed in the image'; exit 127; }\n"
        f't={target}.part; rm -rf "$t" && mkdir -p "$t" || exit 1\n'
        f'head -c {size} | tar -xzf - -C "$t" || exit 1\n'
        f'rm -rf {target} && mv "$t" {target}\n'
        "}\n__ci_copy\n"
    ).encode()


def read_file_program(path: str, limit: int) -> bytes:
    """Print a regular file's first `limit` bytes; exit 3 when it is not one."""
    return f'f={value_expr(path)}; [ -f "$f" ] || exit 3; head -c {limit} "$f"\n'.encode()


def finish_program() -> bytes:
    return b'touch "$CI_RUN_DIR/exit"\n'
