"""ci-executor job launcher: PID 1 of a job's sandbox (app/runners/job_sandbox.py).

Not imported by the service: its source is fed to `python -I -S -` inside the sandbox, where
the service's tree is hidden, so it imports nothing but the standard library, all of it before any
step runs (the library is read-only in there; nothing a step writes can be imported later).

Protocol over the socket whose fd number is argv[1]: frames of a 4-byte big-endian length and a
JSON object. The service sends {"op": "run", "argv", "cwd", "env"} with the step's output pipe
attached (SCM_RIGHTS), then during the step {"op": "signal", "sig"} or {"op": "kill"}. The launcher
answers {"ready"} once, then per step {"started": pid} or {"error", "errno"}, then {"exit": code}
(negative: the signal) once every process of the step is dead. End of file: kill all, exit.

As PID 1 of its PID namespace it receives no signal from a step unless it handles it (the kernel's
rule for a namespace's init), so it resets Python's SIGINT handler first; it is non-dumpable, so a
step (same uid, no capability) can neither ptrace it nor read its memory, environment or fds.
"""

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import struct
import sys
from typing import Any

_PR_SET_DUMPABLE = 4
_HEAD = struct.Struct(">I")


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One frame and the fds that came with it; EOFError when the service is gone."""
    head, fds, _, _ = socket.recv_fds(sock, _HEAD.size, 1)
    if not head:
        raise EOFError
    head += _recv_exact(sock, _HEAD.size - len(head))
    for fd in fds:
        os.set_inheritable(fd, False)
    body = _recv_exact(sock, _HEAD.unpack(head)[0])
    return json.loads(body), fds


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message).encode()
    sock.sendall(_HEAD.pack(len(body)) + body)


def kill_all() -> None:
    """SIGKILL every other process of the namespace (kill(-1) from its init spares only the
    caller, and a fork racing it is restarted and killed), then reap them all: every process of
    a PID namespace descends from its init or is reparented to it, so none is left at ECHILD."""
    with contextlib.suppress(ProcessLookupError):  # nobody else
        os.kill(-1, signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _program(name: str, env: dict[str, str]) -> str:
    if "/" in name:
        return name
    for folder in env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(2, "No such file or directory", name)


def spawn(message: dict[str, Any], out: int) -> int:
    argv = [str(a) for a in message["argv"]]
    env = {str(k): str(v) for k, v in message["env"].items()}
    os.chdir(str(message["cwd"]))
    return os.posix_spawn(
        _program(argv[0], env),
        argv,
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, out, 2),
        ],
        setsid=True,
        setsigmask=(),
        # Python ignores these; an ignored disposition would survive exec into the step.
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT),
    )


def run_step(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> None:
    if len(fds) != 1:
        send(sock, {"error": "no output pipe came with the step", "errno": 0})
        return
    try:
        pid = spawn(message, fds[0])
    except (OSError, ValueError) as exc:  # ValueError: a NUL or an unencodable character
        send(sock, {"error": str(exc), "errno": getattr(exc, "errno", 0) or 0})
        return
    finally:
        os.close(fds[0])  # the step's processes hold the only write ends left
    send(sock, {"started": pid})
    pidfd = os.pidfd_open(pid)
    code = None
    while code is None:
        ready, _, _ = select.select([sock.fileno(), pidfd], [], [])
        if pidfd in ready:
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        elif sock.fileno() in ready:
            order, _ = receive(sock)  # EOFError: the caller kills all
            sig = signal.SIGKILL if order.get("op") == "kill" else int(order.get("sig", 15))
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, sig)  # the step's processes: everyone but this init
    os.close(pidfd)
    kill_all()
    send(sock, {"exit": code})


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_DUMPABLE) failed: errno {ctypes.get_errno()}")
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
    send(sock, {"ready": os.getpid()})
    try:
        while True:
            message, fds = receive(sock)
            if message.get("op") == "run":
                run_step(sock, message, fds)
            else:  # an order that came after its step ended: the step is gone already
                for extra in fds:
                    os.close(extra)
    except (EOFError, ConnectionError):
        kill_all()


if __name__ == "__main__":
    main()
