"""Starting and stopping the local runner's step processes, isolated where the machine allows it.

Two modes (setting `LOCAL_ISOLATION`):

- `namespaces`: every step runs under bubblewrap (`bwrap`) in its own user, PID, IPC and mount
  namespaces. The root filesystem is read-only; the service's working directory, its HOME, the
  directory of its SQLite database and the rest of WORKSPACE_ROOT are hidden under empty tmpfs
  mounts; only the build's directory (its jobs' workspaces) and a per-job temp dir (mounted at
  /tmp) are writable. The
  service's processes are invisible (fresh /proc), no capability survives (a user namespace: the
  hidden mounts cannot be unmounted from inside). The step is PID 1's only child: when it ends,
  the kernel kills everything else in the namespace, daemons included; `--die-with-parent` does
  the same if the service itself dies (kill -9 included).
- `none`: a plain subprocess in its own session. Everything it starts carries a tracking variable
  (`CI_EXECUTOR_TRACK`, as GitHub's runner does with `RUNNER_TRACKING_ID`); at the step's end, on
  cancel, on timeout and when another replica takes the build over, the process group and every
  process whose environment carries the step's (or build's) tracking id are killed. A process that
  scrubs its own environment and leaves the session escapes this; use `namespaces` for hostile code.

`auto` picks `namespaces` when a probe sandbox starts, else `none`, and says why at startup.
We use bubblewrap rather than our own unshare/mount code: it is the small, audited tool Flatpak
relies on for exactly this, and it handles the PID-1 reaper and parent-death signal correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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


_DB_COMPANIONS = ("-wal", "-shm", "-journal")


class IsolationUnavailable(RuntimeError):
    """LOCAL_ISOLATION=namespaces on a machine where no sandbox can be started."""


@dataclass(frozen=True)
class Isolation:
    mode: IsolationMode
    reason: str


def _bwrap_base(bwrap: str) -> list[str]:
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
                [*_bwrap_base(bwrap), "--", "/bin/sh", "-c", "exit 0"],
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


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def tracked_pids(prefix: str) -> list[int]:
    """Processes whose environment carries a tracking id starting with `prefix` (blocking)."""
    needle = f"{TRACK_VAR}={prefix}".encode()
    me = os.getpid()
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue  # gone, or not ours to read
        for item in environ.split(b"\0"):
            if item.startswith(needle):
                found.append(int(entry.name))
                break
    return found


def kill_tracked(prefix: str, sig: signal.Signals = signal.SIGKILL, *, spare: int = 0) -> int:
    """Signal every process carrying a tracking id with this prefix; returns how many (blocking)."""
    count = 0
    for pid in tracked_pids(prefix):
        if pid == spare:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            count += 1
    return count


class Sandbox:
    """Spawns and kills step processes for one LocalRunner."""

    def __init__(
        self,
        isolation: Isolation,
        *,
        workspace_root: Path,
        hidden: Iterable[Path] = (),
        install_key: str = "",
    ) -> None:
        """`hidden`: directories replaced by an empty tmpfs, and files replaced by /dev/null
        (a SQLite database and its -wal/-shm/-journal companions)."""
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

    def _wrap(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        workspace: Path,
        tmpdir: Path,
        readable: Sequence[Path],
    ) -> list[str]:
        assert self._bwrap is not None
        args = _bwrap_base(self._bwrap)
        for path in self._hidden:
            if path.is_dir():
                args += ["--tmpfs", str(path)]
            for candidate in (path, *(Path(f"{path}{s}") for s in _DB_COMPANIONS)):
                if candidate.is_file():
                    args += ["--ro-bind", "/dev/null", str(candidate)]
        args += ["--tmpfs", "/var/tmp", "--bind", str(tmpdir), "/tmp"]
        for path in readable:
            resolved = path.resolve()
            if resolved.exists() and self._visible(resolved):
                args += ["--ro-bind", str(resolved), str(resolved)]
        # The build's own directory stays shared (its jobs may hand files to each other, as
        # they could on one machine); other builds under WORKSPACE_ROOT are hidden above.
        shared = workspace.parent if workspace.parent != self.workspace_root else workspace
        args += ["--bind", str(shared), str(shared), "--chdir", str(cwd), "--", *argv]
        return args

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
    ) -> asyncio.subprocess.Process:
        """Start one step; stdout and stderr share one pipe. Raises OSError if it cannot start.

        `readable`: host paths the build asked for (a `file://` repository) shown read-only,
        unless they hold or lie inside something hidden."""
        env = {**env, TRACK_VAR: track}
        if self.mode == "namespaces":
            argv = self._wrap(argv, cwd=cwd, workspace=workspace, tmpdir=tmpdir, readable=readable)
            env.setdefault("TMPDIR", "/tmp")
        else:
            env.setdefault("TMPDIR", str(tmpdir))
        return await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )

    async def kill(self, proc: asyncio.subprocess.Process, track: str) -> None:
        """SIGKILL everything the step started. Under bwrap, killing the outer process kills the
        namespace (parent-death signal to its PID 1); the scan catches `setsid` escapees in
        `none` mode."""
        _signal_group(proc.pid, signal.SIGKILL)
        if self.mode == "none":
            await asyncio.to_thread(kill_tracked, track)

    async def terminate(
        self, proc: asyncio.subprocess.Process, track: str, grace_seconds: float
    ) -> None:
        """SIGTERM the step's processes, give them `grace_seconds`, then SIGKILL the rest."""
        if self.mode == "namespaces":
            # SIGTERM to bwrap itself would kill the namespace at once; the step's own processes
            # get it and the whole namespace is killed when the grace period ends.
            await asyncio.to_thread(kill_tracked, track, signal.SIGTERM, spare=proc.pid)
        else:
            _signal_group(proc.pid, signal.SIGTERM)
            await asyncio.to_thread(kill_tracked, track, signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace_seconds)
        await self.kill(proc, track)
        await proc.wait()

    async def reap_build(self, build_id: int) -> int:
        """Kill whatever is left of a build's steps on this machine (after a crash)."""
        return await asyncio.to_thread(kill_tracked, self.track_id(build_id, ""))
