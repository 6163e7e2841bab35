"""`hashFiles(...)` for a job whose workspace is in its pod.

The expression engine asks for hashes synchronously, in the middle of a step's `prepare`; the files
are only reachable through exec. So the follower runs `prepare` on a worker thread (`PREPARE_POOL`)
and this hasher, called on that thread, has the event loop exec two small programs in the pod:
one lists the regular files under the patterns' fixed leading directories, the other prints the
SHA-256 of each selected file (`sha256sum`, in busybox and coreutils). Selection and the final
digest are the local runner's (app/workflow/hashfiles.py: GitHub's pattern rules).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from app.runners.kubernetes.shell import sh_quote
from app.workflow.expressions import ExpressionEvalError
from app.workflow.hashfiles import combine, parse_patterns, search_roots, select

MAX_LISTED = 200_000  # files listed under the patterns' directories
TIMEOUT_SECONDS = 600.0
# `prepare` runs here, never on the default executor: a hash's exec may need the default pool
# (the HTTP client resolves names there), which prepares waiting on it must not exhaust.
PREPARE_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="k8s-prepare")

# Runs a program in the job's pod: its exit code (None: no answer) and its output.
RunInPod = Callable[[bytes], Awaitable[tuple[int | None, bytes]]]


def list_program(roots: list[str]) -> bytes:
    quoted = " ".join(sh_quote(root) for root in roots)
    return (
        'exec 2>/dev/null; cd "$CI_WORKSPACE" || exit 1\n'
        f'for r in {quoted}; do [ -e "$r" ] && find "$r" -type f; done 2>/dev/null'
        f" | head -n {MAX_LISTED + 1}\n"
    ).encode()


def hash_program(paths: list[str]) -> bytes:
    """One line per path: its SHA-256 in hex, or `-` when it is no longer a regular file."""
    body = "".join(
        f'f={sh_quote(p)}; if [ -f "$f" ]; then sha256sum < "$f" | cut -c1-64; else echo -; fi\n'
        for p in paths
    )
    return (
        "__ci_hash() {\nexec 2>/dev/null\ncommand -v sha256sum >/dev/null || exit 127\n"
        f'cd "$CI_WORKSPACE" || exit 1\n{body}:\n}}\n__ci_hash\n'
    ).encode()


def _normalise(line: str) -> str:
    return line.removeprefix("./")


class PodHashFiles:
    """The runtime's `hash_files` factory for a job in a pod (see the module docstring)."""

    def __init__(self, run: RunInPod, loop: asyncio.AbstractEventLoop) -> None:
        self._run = run
        self._loop = loop

    def __call__(self, workspace: str) -> Callable[[list[str]], str]:
        def compute(patterns: list[str]) -> str:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is self._loop:
                raise ExpressionEvalError("hashFiles cannot be evaluated here")
            future = asyncio.run_coroutine_threadsafe(self._hash(patterns, workspace), self._loop)
            return future.result(TIMEOUT_SECONDS)

        return compute

    async def _hash(self, patterns: list[str], workspace: str) -> str:
        parsed = parse_patterns(patterns, workspace)
        if not any(not exclude for exclude, _ in parsed):
            return ""
        code, listing = await self._run(list_program(search_roots(parsed)))
        if code != 0:
            raise ExpressionEvalError("hashFiles: could not list the workspace in the job's pod")
        files = [_normalise(line) for line in listing.decode("utf-8", "replace").splitlines()]
        if len(files) > MAX_LISTED:
            raise ExpressionEvalError(f"hashFiles: more than {MAX_LISTED} files to look at")
        chosen = select(parsed, [f for f in files if f])
        if not chosen:
            return ""
        code, digests = await self._run(hash_program(chosen))
        if code == 127:
            raise ExpressionEvalError("hashFiles needs `sha256sum` in the job's image")
        if code != 0:
            raise ExpressionEvalError(f"hashFiles: hashing in the job's pod failed ({code})")
        lines = [line.strip() for line in digests.decode("ascii", "replace").splitlines()]
        return combine(bytes.fromhex(line) for line in lines if len(line) == 64)
