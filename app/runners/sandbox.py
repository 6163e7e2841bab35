"""Starting and stopping the local runner's step processes, isolated where the machine allows it.

Two modes (setting `LOCAL_ISOLATION`):

- `namespaces`: every job runs under bubblewrap (`bwrap`) in its own user, PID, IPC and mount
  namespaces. The root filesystem is read-only; the service's working directory, its HOME, the
  directory of its SQLite database and the rest of WORKSPACE_ROOT are hidden under empty tmpfs
  mounts; only the build's directory (its jobs' workspaces and per-job temp dirs, TMPDIR) and
  the machine's /tmp (world-writable on any host; our own files there are masked) are writable. The
  service's processes are invisible (fresh /proc), no capability survives (a user namespace: the
  hidden mounts cannot be unmounted from inside). One sandbox serves all the steps of a job
  (app/runners/job_sandbox.py): its PID 1 is a small launcher that spawns each step on the
  service's order and, when the step's main process exits, SIGKILLs and reaps every other
  process in the namespace (daemons included) before it reports the exit, so nothing a step
  starts is alive when the next one starts. A step cannot signal the launcher (the kernel drops
  signals to a namespace's init that it has no handler for) nor read it (non-dumpable). Each
  step's mounts are computed as for a sandbox of its own, and the job's sandbox is replaced when
  they differ. `--die-with-parent` kills the namespace if the service itself dies (kill -9
  included); if the launcher dies, the step is an infrastructure error. Where no job sandbox can
  start (no Python interpreter the sandbox shows), each step gets a bwrap of its own, whose PID 1
  exits with the step and takes the namespace with it, as before.
- `none`: a plain subprocess in its own session. Everything it starts carries a tracking variable
  (`CI_EXECUTOR_TRACK`, as GitHub's runner does with `RUNNER_TRACKING_ID`); at the step's end, on
  cancel, on timeout and when another replica takes the build over, the process group and every
  process whose environment carries the step's (or build's) tracking id are killed. A process that
  scrubs its own environment and leaves the session escapes this; use `namespaces` for hostile code.
  At a step's end only processes created since the step started are looked at (`PidWindow`).

`auto` picks `namespaces` when a probe sandbox starts, else `none`, and says why at startup.
We use bubblewrap rather than our own unshare/mount code: it is the small, audited tool Flatpak
relies on for exactly this, and it handles the parent-death signal correctly; with `--as-pid-1`
our launcher is the namespace's init and reaper instead of bwrap's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.runners.job_sandbox import JobSandbox, JobStep, SandboxGone
from app.runners.step_process import StepProcess, signal_group

__all__ = ["StepProcess"]  # re-exported: the local runner and tests know it from here


log = logging.getLogger(__name__)

IsolationSetting = Literal["auto", "namespaces", "none"]
IsolationMode = Literal["namespaces", "none"]
TRACK_VAR = "CI_EXECUTOR_TRACK"
# Never hidden, even if the service runs from there: hiding them would break every step.
_SYSTEM_DIRS = frozenset(
    Path(p)
    for p in (
        *("/", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/opt", "/var", "/proc"),
        *("/sys", "/dev", "/run", "/srv", "/mnt", "/media", "/home", "/tmp", "/boot", "/nix"),
    )
)


# At most this many pids handed out during a step: its end-of-step scan reads them one by one on
# the event loop instead of listing /proc in a worker thread.
_FEW_PIDS = 64

# A SQLite database's companions, and its secrets key file (app/secrets.py).
_DB_COMPANIONS = ("-wal", "-shm", "-journal", ".key")


def _kind(path: str) -> Literal["dir", "file"] | None:
    """What `path` is now, following symbolic links (as Path.is_dir / is_file do)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else None


class IsolationUnavailable(RuntimeError):
    """LOCAL_ISOLATION=namespaces on a machine where no sandbox can be started."""


@dataclass(frozen=True)
class Isolation:
    mode: IsolationMode
    reason: str


def bwrap_base(bwrap: str) -> list[str]:
    return [
        bwrap,
        "--die-with-parent",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]


def probe_isolation(setting: IsolationSetting) -> Isolation:
    """Decide the mode (blocking: call it off the event loop). Raises for `namespaces` when
    no sandbox can be started, so a misconfigured replica refuses to start."""
    if setting == "none":
        return Isolation("none", "LOCAL_ISOLATION=none")
    bwrap = shutil.which("bwrap")
    problem: str | None = None
    if bwrap is None:
        problem = "bubblewrap (bwrap) is not installed"
    else:
        try:
            done = subprocess.run(
                [*bwrap_base(bwrap), "--", "/bin/sh", "-c", "exit 0"],
                capture_output=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = f"bwrap could not be started: {exc}"
        else:
            if done.returncode != 0:
                detail = done.stderr.decode(errors="replace").strip()[:300]
                problem = f"bwrap cannot create namespaces here: {detail}"
    if problem is None:
        return Isolation("namespaces", f"bubblewrap at {bwrap} creates user/PID/mount namespaces")
    if setting == "namespaces":
        raise IsolationUnavailable(f"LOCAL_ISOLATION=namespaces but {problem}")
    return Isolation("none", f"{problem}; steps run as plain process groups")


@dataclass(frozen=True)
class PidWindow:
    """Where the kernel's pid cursor (`ns_last_pid`) and its fork count stood when a step
    started. Pids are handed out cyclically, so a process created since has a pid the cursor
    passed since then: the scan at the step's end reads the environment of those only, not of
    every process on the machine (18-58 ms with ~180 processes on the bench machine)."""

    last_pid: int
    forks: int


def pid_window() -> PidWindow | None:
    """Read before spawning a step (cheap: two small /proc files)."""
    try:
        last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
        with open("/proc/stat", "rb") as f:
            forks = next(int(line.split()[1]) for line in f if line.startswith(b"processes "))
        return PidWindow(last, forks)
    except (OSError, ValueError, StopIteration):
        return None  # not Linux, or no CONFIG_CHECKPOINT_RESTORE: scan everything


def _created_since(window: PidWindow | None, live: int) -> Callable[[int], bool]:
    """Which pids may belong to processes created since `window`: the cyclic range the cursor
    moved over. Every pid when that cannot be bounded: no window, or so many forks (threads
    count too) that the cursor may have gone round the whole pid space."""
    now = pid_window()
    if window is None or now is None:
        return lambda _pid: True
    try:
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return lambda _pid: True
    if (now.forks - window.forks) + live >= pid_max // 2:
        return lambda _pid: True
    start, end = window.last_pid, now.last_pid
    if start <= end:
        return lambda pid: start < pid <= end
    return lambda pid: pid > start or pid <= end  # the cursor wrapped around pid_max


def recent_pids(window: PidWindow | None) -> list[int] | None:
    """The pids handed out since `window`, when there are at most _FEW_PIDS of them (a `true`
    step: two or three); None when they cannot be bounded that tightly. Threads take pids too:
    what is not a thread group's leader is skipped by `tracked_pids`."""
    now = pid_window()
    if window is None or now is None or not 0 <= now.forks - window.forks <= _FEW_PIDS:
        return None
    start, end = window.last_pid, now.last_pid
    if not 0 <= end - start <= _FEW_PIDS:
        return None  # wrapped around pid_max: the full scan handles that
    return list(range(start + 1, end + 1))


def _leader(pid: int) -> bool:
    """Is `pid` a process (thread group leader), not one of its threads?"""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1]) == pid
    except (OSError, ValueError):
        pass
    return False


def tracked_pids(
    prefix: str, window: PidWindow | None = None, *, pids: list[int] | None = None
) -> list[int]:
    """Processes whose environment carries a tracking id starting with `prefix` (blocking).
    With `window`, only processes created since it was read are looked at; with `pids`
    (from `recent_pids`), only those."""
    needle = f"{TRACK_VAR}={prefix}".encode()
    me = os.getpid()
    found: list[int] = []
    check_leader = pids is not None  # a listing of /proc names processes only
    if pids is None:
        pids = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
        candidate = _created_since(window, len(pids)) if window else lambda _pid: True
    else:
        candidate = lambda _pid: True  # noqa: E731
    for pid in pids:
        if pid == me or not candidate(pid):
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue  # gone, or not ours to read
        for item in environ.split(b"\0"):
            if item.startswith(needle):
                if not check_leader or _leader(pid):
                    found.append(pid)
                break
    return found


def kill_tracked(
    prefix: str,
    sig: signal.Signals = signal.SIGKILL,
    *,
    spare: int = 0,
    window: PidWindow | None = None,
    pids: list[int] | None = None,
) -> int:
    """Signal every process carrying a tracking id with this prefix (created since `window`,
    when given; among `pids`, when given); returns how many (blocking)."""
    count = 0
    for pid in tracked_pids(prefix, window, pids=pids):
        if pid == spare:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            count += 1
    return count


@dataclass
class _JobSlot:
    """A job's sandbox, once its first step started it."""

    track: str
    box: JobSandbox | None = None
    per_step: bool = False  # no job sandbox could start: a sandbox per step, as before


class Sandbox:
    """Spawns and kills step processes for one LocalRunner."""

    def __init__(
        self,
        isolation: Isolation,
        *,
        workspace_root: Path,
        hidden: Iterable[Path] = (),
        install_key: str = "",
        per_job: bool = True,
    ) -> None:
        """`hidden`: directories replaced by an empty tmpfs, and files replaced by /dev/null
        (a SQLite database and its -wal/-shm/-journal companions). `per_job`: under
        namespaces, one sandbox per job opened with open_job (else one per step)."""
        self.isolation = isolation
        self.workspace_root = workspace_root.resolve()
        # Scopes tracking ids to this install (its database: build ids are unique there), so
        # replicas of other installs on the same machine never kill each other's steps, while a
        # replica of the same install, whatever its WORKSPACE_ROOT, finds what a dead one left.
        key = install_key or str(self.workspace_root)
        self.install_id = hashlib.sha256(key.encode()).hexdigest()[:12]
        self._bwrap = shutil.which("bwrap") if isolation.mode == "namespaces" else None
        paths = {self.workspace_root, *(Path(p).resolve() for p in hidden)}
        self._hidden = sorted(
            (p for p in paths if p not in _SYSTEM_DIRS), key=lambda p: len(p.parts)
        )
        # Each hidden path with its companion names, as strings: _mounts stats them before
        # every step (pathlib's objects were a fifth of a step's CPU on the event loop).
        self._hidden_names = [
            (str(p), tuple(f"{p}{s}" for s in _DB_COMPANIONS)) for p in self._hidden
        ]
        self.per_job = per_job
        self._jobs: dict[Path, _JobSlot] = {}
        # `none` mode: each running step's PidWindow, read just before it was spawned.
        self._windows: weakref.WeakKeyDictionary[StepProcess, PidWindow] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def mode(self) -> IsolationMode:
        return self.isolation.mode

    def track_id(self, build_id: int, job_dir: str, step_index: int | None = None) -> str:
        """`<install>/<build>/` prefixes every id of a build; the job and step follow."""
        base = f"{self.install_id}/{build_id}/"
        if step_index is None:
            return base
        return f"{base}{job_dir}/{step_index}/"

    def _visible(self, path: Path) -> bool:
        """May `path` be shown read-only? Never if it holds or lies in something hidden."""
        return (
            not any(path == h or h in path.parents or path in h.parents for h in self._hidden)
            and path not in _SYSTEM_DIRS
        )

    def _mounts(self, workspace: Path, readable: Sequence[Path]) -> list[str]:
        """bwrap's arguments after bwrap_base for a step of the job in `workspace` (a few stat
        calls: the hidden files that exist now are the ones covered)."""
        args: list[str] = []
        # /tmp stays the machine's /tmp, writable as for any local user (tools and tests hand
        # files through it); whatever of ours lies under it is hidden by the mounts below.
        if _kind("/tmp") == "dir":
            args += ["--bind", "/tmp", "/tmp"]
        args += ["--tmpfs", "/var/tmp"]
        for hidden, companions in self._hidden_names:
            kind = _kind(hidden)
            if kind == "dir":
                # Covered whole. Companions are a database file's (its -wal, its key), not a
                # directory's: 12 of the 21 stat calls before every step were for those.
                args += ["--tmpfs", hidden]
                continue
            if kind == "file":
                args += ["--ro-bind", "/dev/null", hidden]
            for companion in companions:
                if _kind(companion) == "file":
                    args += ["--ro-bind", "/dev/null", companion]
        for path in readable:
            resolved = path.resolve()
            if resolved.exists() and self._visible(resolved):
                args += ["--ro-bind", str(resolved), str(resolved)]
        # The build's own directory stays shared (its jobs may hand files to each other, as
        # they could on one machine); other builds under WORKSPACE_ROOT are hidden above.
        args += ["--bind", str(self._shared(workspace)), str(self._shared(workspace))]
        return args

    def _shared(self, workspace: Path) -> Path:
        return workspace.parent if workspace.parent != self.workspace_root else workspace

    def _wrap(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        workspace: Path,
        readable: Sequence[Path],
    ) -> list[str]:
        assert self._bwrap is not None
        mounts = self._mounts(workspace, readable)
        return [*bwrap_base(self._bwrap), *mounts, "--chdir", str(cwd), "--", *argv]

    def _launcher_python(self) -> str | None:
        """An interpreter the sandbox shows: ours, unless it lives somewhere hidden (a
        virtualenv or pyenv under HOME or the source tree), else the system's python3."""
        ours = Path(os.path.realpath(sys.executable))
        if self._visible(ours) and self._visible(Path(sys.base_prefix).resolve()):
            return str(ours)
        for name in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
            path = Path(os.path.realpath(name))
            if path.is_file() and os.access(path, os.X_OK) and self._visible(path):
                return str(path)
        return None

    def open_job(self, workspace: Path, track: str, steps: int) -> None:
        """The job in `workspace` starts: its `steps` share one sandbox (started at its first
        step). `track`: a prefix of its steps' tracking ids, carried by the sandbox's bwrap.

        A job of one step keeps a sandbox of its own for it: the launcher's interpreter start
        (~10 ms here, against ~4 ms for a bwrap alone) only pays off from the second step, and
        a burst of one-step builds spent it on every build's dispatch path."""
        if self.mode == "namespaces" and self.per_job and steps > 1:
            self._jobs[workspace] = _JobSlot(track)

    def close_job(self, workspace: Path) -> None:
        """The job ended (none of its steps runs any more): its sandbox goes."""
        slot = self._jobs.pop(workspace, None)
        if slot is not None and slot.box is not None:
            slot.box.close()

    async def _spawn_in_job(
        self,
        slot: _JobSlot,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        workspace: Path,
        readable: Sequence[Path],
    ) -> StepProcess | None:
        """The step through its job's sandbox, started or replaced first when needed: a new
        sandbox when the last one died or this step's mounts would differ from its (another
        `readable`, a hidden file that appeared). None: no job sandbox here, spawn per step."""
        assert self._bwrap is not None
        mounts = self._mounts(workspace, readable)
        box = slot.box
        if box is None or box.dead is not None or box.plan != mounts:
            if box is not None:
                box.close()
            slot.box = None
            python = self._launcher_python()
            if python is None:
                self._per_step(slot, "no Python interpreter visible in the sandbox")
                return None
            launcher = [python, "-I", "-S", "-"]  # its source comes on stdin
            args = [*bwrap_base(self._bwrap), "--as-pid-1", *mounts]
            args += ["--chdir", str(self._shared(workspace)), "--", *launcher]
            try:
                box = await JobSandbox.start(args, env={TRACK_VAR: slot.track}, plan=mounts)
            except OSError as exc:
                self._per_step(slot, str(exc))
                return None
            slot.box = box
        try:
            return await box.run(argv, cwd=cwd, env=env)
        except SandboxGone:
            if box.plan is not mounts:  # not the one just started: it died between steps
                return await self._spawn_in_job(
                    slot, argv, cwd=cwd, env=env, workspace=workspace, readable=readable
                )
            raise

    def _per_step(self, slot: _JobSlot, why: str) -> None:
        log.warning("no job sandbox (%s): this job's steps get a sandbox each", why)
        slot.per_step = True

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: dict[str, str],
        workspace: Path,
        tmpdir: Path,
        track: str,
        readable: Sequence[Path] = (),
    ) -> StepProcess:
        """Start one step; stdout and stderr share one pipe. Raises OSError if it cannot start.

        `readable`: host paths the build asked for (a `file://` repository) shown read-only,
        unless they hold or lie inside something hidden."""
        env = {**env, TRACK_VAR: track}
        env.setdefault("TMPDIR", str(tmpdir))
        window, executable = None, None
        slot = self._jobs.get(workspace)
        if slot is not None and not slot.per_step:
            job_step = await self._spawn_in_job(
                slot, argv, cwd=cwd, env=env, workspace=workspace, readable=readable
            )
            if job_step is not None:
                return job_step
        if self.mode == "namespaces":
            argv = self._wrap(argv, cwd=cwd, workspace=workspace, readable=readable)
        else:
            window = pid_window()
            # Looked up here, on the PATH the step gets, as the child would: the child then
            # execs it at once instead of trying each PATH entry in turn (~8 failed execve
            # calls on the bench machine, ~0.5 ms of a step's wall time when it is loaded).
            # Not with a relative entry: the child resolves that from the step's directory.
            path = env.get("PATH", "")
            if "/" not in argv[0] and path and all(p.startswith("/") for p in path.split(":")):
                executable = shutil.which(argv[0], path=path)
        if executable is not None:
            try:
                proc = await StepProcess.start(argv, cwd=cwd, env=env, executable=executable)
            except OSError:  # not executable after all: the PATH search decides, as without it
                proc = await StepProcess.start(argv, cwd=cwd, env=env)
        else:
            proc = await StepProcess.start(argv, cwd=cwd, env=env)
        if window is not None:
            self._windows[proc] = window
        return proc

    async def kill(self, proc: StepProcess, track: str) -> None:
        """SIGKILL everything the step started. Under bwrap, killing the outer process kills the
        namespace (parent-death signal to its PID 1); the scan catches `setsid` escapees in
        `none` mode; a job sandbox's launcher kills all but itself."""
        if isinstance(proc, JobStep):
            proc.signal_all(signal.SIGKILL)
            return
        signal_group(proc.pid, signal.SIGKILL)
        if self.mode == "none":
            window = self._windows.get(proc)
            few = recent_pids(window)
            if few is not None:
                # A handful of /proc reads: cheaper here than a worker-thread trip.
                kill_tracked(track, pids=few)
            else:
                await asyncio.to_thread(kill_tracked, track, window=window)

    async def terminate(self, proc: StepProcess, track: str, grace_seconds: float) -> None:
        """SIGTERM the step's processes, give them `grace_seconds`, then SIGKILL the rest."""
        if isinstance(proc, JobStep):
            proc.signal_all(signal.SIGTERM)  # through the launcher, to all but itself
        elif self.mode == "namespaces":
            # SIGTERM to bwrap itself would kill the namespace at once; the step's own processes
            # get it and the whole namespace is killed when the grace period ends.
            await asyncio.to_thread(kill_tracked, track, signal.SIGTERM, spare=proc.pid)
        else:
            signal_group(proc.pid, signal.SIGTERM)
            window = self._windows.get(proc)
            await asyncio.to_thread(kill_tracked, track, signal.SIGTERM, window=window)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace_seconds)
        await self.kill(proc, track)
        await proc.wait()

    async def reap_build(self, build_id: int) -> int:
        """Kill whatever is left of a build's steps on this machine (after a crash)."""
        return await asyncio.to_thread(kill_tracked, self.track_id(build_id, ""))
