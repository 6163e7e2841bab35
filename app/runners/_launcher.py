"""ci-executor job launcher: PID 1 of a job's sandbox (app/runners/job_sandbox.py).

Not imported by the service: its source is fed to `python -I -S -` inside the sandbox, where
the service's tree is hidden, so it imports nothing but the standard library, all of it before any
step runs (the library is read-only in there; nothing a step writes can be imported later).

Protocol over the socket whose fd number is argv[1]: frames of a 4-byte big-endian length and a
body. The service sends marshal bodies (version 4, of dicts, lists, strings and ints only):
{"op": "run", "argv", "cwd", "env"} with the step's output pipe attached (SCM_RIGHTS), then during
the step {"op": "signal", "sig"} or {"op": "kill"}. The launcher answers in JSON objects, which the
service parses as untrusted text: {"ready"} once, then per step {"started": pid} or {"error",
"errno"}, then {"exit": code} (negative: the signal) once every process of the step is dead. End of
file: kill all, exit.

As PID 1 of its PID namespace it receives no signal from a step unless it handles it (the kernel's
rule for a namespace's init), so it resets Python's SIGINT handler first; it is non-dumpable, so a
step (same uid, no capability) can neither ptrace it nor read its memory, environment or fds.

Its start-up is on the path of every job's first step, so it loads only what is quick to load
(measured with python3.11 -I -S: the interpreter ~7 ms, the launcher ~23 ms with the usual modules,
~10 ms without). The modules it leaves out are conveniences over C modules whose functions are the
same: json (it imports re; ~6 ms: orders come as marshal, answers are encoded here), the Python
layers of socket (enum, selectors; ~5 ms), signal (enum; ~3.5 ms), ctypes (~1-1.5 ms) and os
(~1 ms), and typing, contextlib and struct. marshal, posix and _signal are built in and loaded by
every interpreter before any code runs; _socket and _ctypes are the libraries' own C modules.
"""

import _ctypes  # ctypes' C module: the Python layer costs ~1-1.5 ms (see _CFunction)
import _socket  # socket's C module (recvmsg, sendall): socket.py imports enum and selectors
import marshal
import posix  # what os wraps, built in: os imports _collections_abc, stat, posixpath
import select
import sys

TYPE_CHECKING = False  # mypy reads the branch below; it never runs (typing costs ~2.5 ms)
if TYPE_CHECKING:
    import signal as _signal  # no stubs for _signal: the same functions, without the enums
    from typing import Any
else:
    import _signal  # signal's C module, built in and already loaded: signal.py imports enum

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3
_HEAD = 4  # bytes of a frame's length, big-endian


class _CFunction(_ctypes.CFuncPtr):
    """A C function of ints returning an int, errno kept for get_errno: what ctypes.CDLL makes
    of `libc.prctl` (its _FuncPtr, with no restype: a C int), from the same C module."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO


def _non_dumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0), read back: exit rather than run steps next to a dumpable init."""
    libc = _ctypes.dlopen(None)  # type: ignore[arg-type]  # the program and its libc: CDLL(None)
    prctl = _CFunction(_ctypes.dlsym(libc, "prctl"))
    if prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_DUMPABLE) failed: errno {_ctypes.get_errno()}")
    if prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_DUMPABLE) did not take")


def _recv_exact(sock: _socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def receive(sock: _socket.socket) -> "tuple[dict[str, Any], list[int]]":
    """One frame and the fds that came with it; EOFError when the service is gone."""
    head, ancillary, _, _ = sock.recvmsg(_HEAD, _socket.CMSG_LEN(4))  # room for one fd
    fds = []  # as socket.recv_fds: native C ints
    for level, kind, data in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [
                int.from_bytes(data[i : i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)
            ]
    if not head:
        raise EOFError
    head += _recv_exact(sock, _HEAD - len(head))
    for fd in fds:
        posix.set_inheritable(fd, False)
    body = _recv_exact(sock, int.from_bytes(head, "big"))
    return marshal.loads(body), fds


def _json_string(text: str) -> str:
    """`text` as a JSON string of printable ASCII: anything else, quotes and backslashes as
    \\uXXXX (a surrogate pair above U+FFFF)."""
    out = []
    for char in text:
        point = ord(char)
        if 0x20 <= point < 0x7F and char != '"' and char != "\\":
            out.append(char)
        elif point > 0xFFFF:
            point -= 0x10000
            out.append(f"\\u{0xD800 + (point >> 10):04x}\\u{0xDC00 + (point & 0x3FF):04x}")
        else:
            out.append(f"\\u{point:04x}")
    return '"' + "".join(out) + '"'


def encode(message: "dict[str, int | str]") -> bytes:
    """A frame of `message` (string keys; int or string values) as a JSON object."""
    fields = [
        _json_string(key) + ":" + (_json_string(value) if isinstance(value, str) else str(value))
        for key, value in message.items()
    ]
    body = ("{" + ",".join(fields) + "}").encode("ascii")
    return len(body).to_bytes(_HEAD, "big") + body


def send(sock: _socket.socket, message: "dict[str, int | str]") -> None:
    sock.sendall(encode(message))


def signal_others(sig: int) -> None:
    """`sig` to every process of the namespace but this init (kill(-1) from its init)."""
    try:  # noqa: SIM105 (contextlib would cost an import at start-up)
        posix.kill(-1, sig)
    except ProcessLookupError:  # nobody else
        pass


def kill_all() -> None:
    """SIGKILL every other process of the namespace (kill(-1) from its init spares only the
    caller, and a fork racing it is restarted and killed), then reap them all: every process of
    a PID namespace descends from its init or is reparented to it, so none is left at ECHILD."""
    signal_others(_signal.SIGKILL)
    while True:
        try:
            posix.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def _program(name: str, env: dict[str, str]) -> str:
    """The step's executable, looked up on its PATH as os.path would (a regular file we may
    execute; an empty entry is the current directory)."""
    if "/" in name:
        return name
    for folder in env.get("PATH", "/bin:/usr/bin").split(":"):  # os.defpath
        folder = folder or "."
        path = folder + name if folder.endswith("/") else f"{folder}/{name}"
        try:
            regular = posix.stat(path).st_mode & 0o170000 == 0o100000  # S_ISREG
        except (OSError, ValueError):  # ValueError: a NUL
            continue
        if regular and posix.access(path, posix.X_OK):
            return path
    raise FileNotFoundError(2, "No such file or directory", name)


def spawn(message: "dict[str, Any]", out: int) -> int:
    argv = [str(a) for a in message["argv"]]
    env = {str(k): str(v) for k, v in message["env"].items()}
    posix.chdir(str(message["cwd"]))
    return posix.posix_spawn(
        _program(argv[0], env),
        argv,
        env,
        file_actions=[
            (posix.POSIX_SPAWN_OPEN, 0, "/dev/null", posix.O_RDONLY, 0),
            (posix.POSIX_SPAWN_DUP2, out, 1),
            (posix.POSIX_SPAWN_DUP2, out, 2),
        ],
        setsid=True,
        setsigmask=(),
        # Python ignores these; an ignored disposition would survive exec into the step.
        setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGINT),
    )


def run_step(sock: _socket.socket, message: "dict[str, Any]", fds: list[int]) -> None:
    if len(fds) != 1:
        send(sock, {"error": "no output pipe came with the step", "errno": 0})
        return
    try:
        pid = spawn(message, fds[0])
    except (OSError, ValueError) as exc:  # ValueError: a NUL or an unencodable character
        send(sock, {"error": str(exc), "errno": getattr(exc, "errno", 0) or 0})
        return
    finally:
        posix.close(fds[0])  # the step's processes hold the only write ends left
    send(sock, {"started": pid})
    pidfd = posix.pidfd_open(pid)
    code = None
    while code is None:
        ready, _, _ = select.select([sock.fileno(), pidfd], [], [])
        if pidfd in ready:
            code = posix.waitstatus_to_exitcode(posix.waitpid(pid, 0)[1])
        elif sock.fileno() in ready:
            order, _ = receive(sock)  # EOFError: the caller kills all
            sig = _signal.SIGKILL if order.get("op") == "kill" else int(order.get("sig", 15))
            signal_others(sig)  # the step's processes
    posix.close(pidfd)
    kill_all()
    send(sock, {"exit": code})


def main() -> None:
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
    _non_dumpable()
    fd = int(sys.argv[1])
    posix.set_inheritable(fd, False)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
    send(sock, {"ready": posix.getpid()})
    try:
        while True:
            message, fds = receive(sock)
            if message.get("op") == "run":
                run_step(sock, message, fds)
            else:  # an order that came after its step ended: the step is gone already
                for extra in fds:
                    posix.close(extra)
    except (EOFError, ConnectionError):
        kill_all()


if __name__ == "__main__":
    main()
