"""One bubblewrap sandbox per job: its PID 1 is a launcher (app/runners/_launcher.py) that
spawns the job's steps one at a time, on orders sent over a unix socket pair.

Starting bwrap costs 2-3 ms of namespaces and mounts on top of the step's own spawn; a job pays it
once instead of once per step (issue #15). What a per-step sandbox guaranteed still holds: the
same namespaces and mounts (app/runners/sandbox.py builds both from one list, and a job's sandbox
is replaced when that list would differ for a step), and nothing a step starts outlives it: at the
step's end the launcher, as the namespace's init, SIGKILLs every other process in the namespace and
reaps them before it reports the exit, so the next step starts alone.

If the launcher dies or its socket breaks, the running step ends as an infrastructure error
(`StepProcess.lost`) and the sandbox is killed; the job's next spawn starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import marshal
import os
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.runners.step_process import PIPE_LIMIT, StepProcess, spawn

log = logging.getLogger(__name__)

LAUNCHER_SOURCE = Path(__file__).with_name("_launcher.py").read_text()
# How long a new sandbox may take to say it is ready (bwrap, then a Python start-up).
_READY_SECONDS = 20.0
_HEAD = struct.Struct(">I")


def _frame(message: dict[str, Any]) -> bytes:
    """An order for the launcher: marshal, which it decodes without an import (json costs its
    start-up several ms). Version 4, which every Python 3 since 3.4 reads: the launcher's
    interpreter may be another than ours. Only exact dicts, lists, strings and ints go in.
    Nothing the sandbox sends is ever unmarshalled here: its answers are parsed as JSON."""
    body = marshal.dumps(message, 4)
    return _HEAD.pack(len(body)) + body


class SandboxGone(OSError):
    """The sandbox was found dead before the step reached it: nothing of the step ran."""


class JobStep(StepProcess):
    """A step run by a job sandbox's launcher. Its pid is the sandbox's bwrap (a host pid): the
    runner's last-resort SIGKILL of that process group ends the whole sandbox, which is right
    when the runner gives up on a step."""

    def __init__(self, box: JobSandbox) -> None:
        super().__init__(box.pid, asyncio.StreamReader(limit=PIPE_LIMIT))
        self.box = box

    def lose(self, why: str) -> None:
        self.lost = why
        self._exited_with(-signal.SIGKILL)

    def signal_all(self, sig: signal.Signals) -> None:
        """`sig` to every process of the step (the launcher's kill(-1)); SIGKILL: they are all
        dead and reaped when wait() returns."""
        if not self.exited:
            self.box.order(sig)


class JobSandbox:
    """A running job sandbox: its bwrap process and the service's end of the socket."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket, plan: object) -> None:
        self.plan = plan
        self.pid = popen.pid
        self.dead: str | None = None  # why it can no longer run steps
        self._popen = popen
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._reply: asyncio.Future[dict[str, Any]] | None = None
        self._step: JobStep | None = None
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def start(cls, argv: Sequence[str], *, env: dict[str, str], plan: object) -> JobSandbox:
        """`argv`: bwrap's, ending with `python -I -S -` (the launcher is fed on stdin); the
        launcher's socket fd number is appended. Raises OSError when it does not come up."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            popen = await spawn(
                [*argv, str(theirs.fileno())],
                then=theirs.close,
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except BaseException:
            ours.close()
            raise
        # The launcher's source on its stdin (`python -`): a few KiB, under a pipe's buffer.
        assert popen.stdin is not None
        with contextlib.suppress(OSError):
            popen.stdin.write(LAUNCHER_SOURCE.encode())
        with contextlib.suppress(OSError):
            popen.stdin.close()
        ours.setblocking(False)
        box = cls(popen, ours, plan)
        box._reply = box._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(box._reply), _READY_SECONDS)
        except (OSError, TimeoutError) as exc:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(box.pid, signal.SIGKILL)
            detail = await asyncio.to_thread(box._stderr)  # all of it is dead: end of file
            box.close()
            raise OSError(f"the job sandbox did not start: {detail or exc!r}") from exc
        except BaseException:
            box.close()
            raise
        return box

    def _stderr(self) -> str:
        """What bwrap or the launcher said (blocking; once they are killed)."""
        assert self._popen.stderr is not None
        with contextlib.suppress(OSError, ValueError):
            return self._popen.stderr.read(4096).decode(errors="replace").strip()
        return ""

    async def run(self, argv: Sequence[str], *, cwd: Path, env: dict[str, str]) -> JobStep:
        """Start one step; its stdout and stderr share one new pipe. Raises OSError if it cannot
        start (the sandbox still runs) or the sandbox is gone (`dead` says why)."""
        if self.dead is not None:
            raise SandboxGone(self.dead)
        step = JobStep(self)
        frame = _frame(
            {
                "op": "run",
                "argv": [str(arg) for arg in argv],
                "cwd": str(cwd),
                "env": {str(name): str(value) for name, value in env.items()},
            }
        )
        read, write = os.pipe()
        self._step, self._reply = step, self._loop.create_future()
        try:
            try:
                sent = socket.send_fds(self._sock, [frame], [write])
            except (BrokenPipeError, ConnectionResetError) as exc:
                self._lose(f"the job sandbox's launcher exited: {exc!r}", unread=True)
                raise SandboxGone(str(exc)) from exc
            finally:
                os.close(write)  # the step's processes hold the only write ends
            if sent < len(frame):
                await self._loop.sock_sendall(self._sock, frame[sent:])
            reply = await asyncio.shield(self._reply)
        except BaseException as exc:
            os.close(read)
            if not isinstance(exc, SandboxGone):
                self._lose(f"the job sandbox's socket broke: {exc!r}")
            raise
        if "error" in reply:
            os.close(read)
            self._step = None
            raise OSError(int(reply.get("errno") or 0) or None, str(reply["error"]))
        try:
            await step._read_from(open(read, "rb", buffering=0))  # noqa: SIM115 (the transport owns it)
        except BaseException:
            os.close(read)
            self.order(signal.SIGKILL)
            raise
        return step

    def order(self, sig: signal.Signals) -> None:
        """Signal the running step's processes (the launcher ignores it between steps)."""
        if self.dead is not None:
            return
        order = {"op": "kill"} if sig == signal.SIGKILL else {"op": "signal", "sig": int(sig)}
        try:
            self._sock.sendall(_frame(order))  # a few bytes: the socket never has them waiting
        except OSError as exc:
            self._lose(f"the job sandbox's socket broke: {exc!r}")

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionResetError as exc:
            # Only a peer that closed with our bytes unread resets: the launcher died without
            # reading the order in flight, so none of that step ran.
            self._lose(f"the job sandbox's launcher exited: {exc!r}", unread=True)
            return
        except OSError as exc:
            self._lose(f"the job sandbox's socket broke: {exc!r}")
            return
        if not data:
            self._lose("the job sandbox's launcher exited")
            return
        self._buffer += data
        while len(self._buffer) >= _HEAD.size:
            (size,) = _HEAD.unpack_from(self._buffer)
            if len(self._buffer) < _HEAD.size + size:
                break
            try:
                message = json.loads(self._buffer[_HEAD.size : _HEAD.size + size])
            except ValueError:
                self._lose("the job sandbox's launcher sent garbage")
                return
            del self._buffer[: _HEAD.size + size]
            self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "exit" in message:
            step, self._step = self._step, None
            if step is not None:
                step._exited_with(int(message["exit"]))
        elif self._reply is not None and not self._reply.done():
            self._reply.set_result(message)

    def _lose(self, why: str, *, unread: bool = False) -> None:
        """The sandbox cannot be trusted to run steps any more: kill it, fail what waits on it.
        `unread`: the launcher never read the order in flight (SandboxGone: try a new one)."""
        if self.dead is not None:
            return
        self.dead = why
        log.warning("job sandbox (bwrap pid %d): %s", self.pid, why)
        self._shut()
        if self._reply is not None and not self._reply.done():
            self._reply.set_exception(SandboxGone(why) if unread else OSError(why))
            self._reply.exception()  # whoever awaits it gets it; nobody else must be told
        step, self._step = self._step, None
        if step is not None:
            step.lose(why)

    def _shut(self) -> None:
        """Close the socket (the launcher kills all and exits at end of file) and SIGKILL the
        bwrap process group so the namespace dies even if the launcher does not answer; its
        exit is reaped off the loop."""
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        threading.Thread(target=self._reap, daemon=True).start()

    def _reap(self) -> None:
        self._popen.wait()
        if self._popen.stderr is not None:
            self._popen.stderr.close()

    def close(self) -> None:
        """At the job's end (nothing of it runs any more), or when the sandbox is replaced."""
        if self.dead is None:
            self.dead = "closed"
            self._shut()
            step, self._step = self._step, None
            if step is not None:
                step.lose("the job sandbox was closed")
