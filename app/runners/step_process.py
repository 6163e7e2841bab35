"""A step's main process as the local runner sees it (app/runners/sandbox.py starts them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

# The output pipe's read buffer, asyncio's default for subprocess pipes.
PIPE_LIMIT = 2**16


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def spawn(
    argv: Sequence[str], *, then: Callable[[], object] | None = None, **options: Any
) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(argv, **options)` in a worker thread, its process in a session of its
    own (`start_new_session` is forced: a spawn that is given up is killed by its group).

    Why not on the event loop: Popen's vfork returns only once the child has exec'd, and on a
    loaded machine the child waits for a CPU first. In a burst of 50 builds on two cores that
    was ~6 ms a spawn, 300 ms of the burst, during which the loop did nothing else (py-spy).
    Python drops the GIL across that wait (gh-104372; on the 3.11.7 here, a thread that spent
    2.8 s of 3 s inside Popen stalled the main thread no more than no thread did), so from a
    thread it holds up only the step it starts.

    `then` runs once Popen has returned or raised, whatever happens to the caller: a file the
    child inherits (`pass_fds`) is closed there, never while the child may still be forking.
    If the caller is cancelled meanwhile, the process is killed and reaped when it has
    started."""

    def popen() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, **options, start_new_session=True)

    started = asyncio.get_running_loop().run_in_executor(None, popen)
    if then is not None:
        started.add_done_callback(lambda _: then())
    try:
        return await asyncio.shield(started)
    except asyncio.CancelledError:
        started.add_done_callback(_abandoned)
        raise


def _abandoned(started: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """A spawn whose caller was cancelled: nobody owns the process, so it is killed, its pipes
    closed and its exit collected (in a thread, as nothing watches it)."""
    if started.cancelled() or started.exception() is not None:
        return
    popen = started.result()
    signal_group(popen.pid, signal.SIGKILL)
    for pipe in (popen.stdin, popen.stdout, popen.stderr):
        if pipe is not None:
            pipe.close()
    asyncio.get_running_loop().run_in_executor(None, popen.wait)


class StepProcess:
    """A step's main process as the local runner sees it: a pid-like handle (a host pid whose
    process group may be SIGKILLed to end the step: the step's own, or its job sandbox's bwrap),
    its output pipe (stdout and stderr), its exit. `lost` says why the step ended that was not
    the step's doing (its job sandbox died): an infrastructure error, not a failure."""

    lost: str | None = None

    def __init__(self, pid: int, stdout: asyncio.StreamReader) -> None:
        self.pid = pid
        self.stdout = stdout
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._transport: asyncio.BaseTransport | None = None
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        return self._returncode

    @property
    def exited(self) -> bool:
        return self._exited.done()

    def _exited_with(self, code: int) -> None:
        self._returncode = code
        if not self._exited.done():
            self._exited.set_result(code)

    async def wait(self) -> int:
        """The exit status (negative: the signal that killed it), as asyncio reports it."""
        return await asyncio.shield(self._exited)

    def exit(self) -> asyncio.Future[int]:
        """`wait()` as a future, for asyncio.wait without a task of its own (one fewer task a
        step); cancelling it leaves the exit itself alone."""
        return asyncio.shield(self._exited)

    def close(self) -> None:
        """Stop reading the output pipe (normally it closes by itself at end of file)."""
        if self._transport is not None:
            self._transport.close()

    async def _read_from(self, pipe: IO[bytes]) -> None:
        """Read the output pipe on the event loop (it takes ownership of `pipe`)."""
        self._transport, _ = await self._loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self.stdout), pipe
        )

    @classmethod
    async def start(
        cls, argv: Sequence[str], *, cwd: Path, env: dict[str, str], executable: str | None = None
    ) -> StepProcess:
        """A child of this process, in a new session (see ChildStep). `executable`: argv[0]
        already looked up on the PATH (see Sandbox.spawn)."""
        return await ChildStep.start_child(argv, cwd=cwd, env=env, executable=executable)


class ChildStep(StepProcess):
    """A step that is this process's own child.

    The exit is watched through a pidfd the event loop polls, so it costs no thread: asyncio's
    default child watcher (Python 3.11's ThreadedChildWatcher) starts one thread per child and
    hands the exit back across threads, 1.5-3 ms of a step on a loaded two-core machine (py-spy
    of bench/step_overhead.py). Where pidfds are missing (Linux < 5.3), a thread waits instead."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout: asyncio.StreamReader) -> None:
        super().__init__(popen.pid, stdout)
        self._popen = popen
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            self._pidfd = -1
            threading.Thread(target=self._wait_thread, daemon=True).start()
        else:
            self._loop.add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        try:
            _, status = os.waitpid(self.pid, 0)  # the pidfd is readable: it has exited
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # reaped by someone else: its status is lost
            code = 255
        self._exited_with(code)

    def _wait_thread(self) -> None:
        code = self._popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._exited_with, code)

    def _exited_with(self, code: int) -> None:
        self._popen.returncode = code
        super()._exited_with(code)

    @classmethod
    async def start_child(
        cls, argv: Sequence[str], *, cwd: Path, env: dict[str, str], executable: str | None = None
    ) -> ChildStep:
        """Fork and exec as asyncio's subprocess_exec does (vfork, close_fds), in a new session.
        Raises OSError if it cannot start."""
        popen = await spawn(
            argv,
            executable=executable,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert popen.stdout is not None
        proc = cls(popen, asyncio.StreamReader(limit=PIPE_LIMIT))
        try:
            await proc._read_from(popen.stdout)
        except BaseException:
            signal_group(popen.pid, signal.SIGKILL)
            popen.stdout.close()
            raise
        return proc


def step_timeout(own: float | None, job_deadline: float | None) -> float | None:
    """Seconds the step may run: its own timeout or what is left of its job's, the shorter."""
    timeouts = [own] if own else []
    if job_deadline is not None:
        timeouts.append(max(0.0, job_deadline - time.monotonic()))
    return min(timeouts) if timeouts else None


async def wait_step(
    waiter: asyncio.Future[Any],
    canceller: asyncio.Future[Any],
    started: asyncio.Future[str | None] | None,
    timeout: float | None,
) -> tuple[set[asyncio.Future[Any]], str | None]:
    """Until the step exits or is cancelled (in the set returned; nothing: it timed out), or
    its start could not be stored (the reason returned)."""
    until = time.monotonic() + timeout if timeout is not None else None
    watched = {waiter, canceller} if started is None else {waiter, canceller, started}
    while True:
        left = None if until is None else max(0.0, until - time.monotonic())
        done, _ = await asyncio.wait(watched, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        if started is None or started not in done or waiter in done:
            return done, None
        watched.discard(started)
        if (problem := started.result()) is not None:
            return done, problem
