"""`hashFiles(...)` for a job whose workspace is in its pod.

The expression engine asks for hashes synchronously, in the middle of a step's `prepare`; the files
are only reachable through exec. So the follower runs `prepare` on a worker thread (`PREPARE_POOL`)
and this hasher, called on that thread, has the event loop exec two small programs in the pod:
one lists the regular files under the patterns' fixed leading directories, the other prints the
SHA-256 of each selected file (`sha256sum`, in busybox and coreutils). Selection happens here, with
GitHub's pattern rules (@actions/glob, as the runner's `hashFiles` uses it):

- one pattern per argument (or per line); `#` lines are comments; `!pattern` excludes what the
  patterns before it selected; a later include can select it again;
- `*` and `?` match within a path segment, `[...]` a character class, `**` any number of
  segments; dotfiles are matched;
- a pattern that matches a directory matches every file beneath it;
- patterns are relative to the workspace; an absolute pattern counts only inside it.

The result is GitHub's: the SHA-256 of the concatenated SHA-256 digests of the selected files, in
path order; "" when nothing matches.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from app.runners.kubernetes.shell import sh_quote
from app.workflow.expressions import ExpressionEvalError

MAX_FILES = 10_000  # selected files (as the local runner's hashFiles)
MAX_LISTED = 200_000  # files listed under the patterns' directories
TIMEOUT_SECONDS = 600.0
# `prepare` runs here, never on the default executor: a hash's exec may need the default pool
# (the HTTP client resolves names there), which prepares waiting on it must not exhaust.
PREPARE_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="k8s-prepare")

# Runs a program in the job's pod: its exit code (None: no answer) and its output.
RunInPod = Callable[[bytes], Awaitable[tuple[int | None, bytes]]]
_GLOB_CHARS = re.compile(r"[*?\[]")


def _segment_regex(segment: str) -> str:
    out, i = "", 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and (end := segment.find("]", i + 2)) > 0:
            body = segment[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out += "[" + body.replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return out


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A workspace-relative glob pattern as a regex over workspace-relative paths."""
    segments = [s for s in pattern.split("/") if s not in ("", ".")]
    parts: list[str] = []
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)*")
        else:
            parts.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(parts))


def _relative(pattern: str, workspace: str) -> str | None:
    """The pattern relative to the workspace; None for an absolute one outside it."""
    if pattern.startswith("/"):
        root = workspace.rstrip("/") + "/"
        if not pattern.startswith(root):
            return None
        pattern = pattern[len(root) :]
    return pattern.removeprefix("./") or None


def parse_patterns(patterns: list[str], workspace: str) -> list[tuple[bool, str]]:
    """(exclude, workspace-relative pattern) in order."""
    parsed: list[tuple[bool, str]] = []
    for raw in "\n".join(patterns).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = line.startswith("!")
        relative = _relative(line[1:].strip() if exclude else line, workspace)
        if relative is not None:
            parsed.append((exclude, relative))
    return parsed


def search_roots(parsed: list[tuple[bool, str]]) -> list[str]:
    """The fixed leading directories of the include patterns (what `find` has to walk)."""
    roots: set[str] = set()
    for exclude, pattern in parsed:
        if exclude:
            continue
        fixed: list[str] = []
        segments = [s for s in pattern.split("/") if s not in ("", ".")]
        for segment in segments[:-1]:
            if _GLOB_CHARS.search(segment) or segment == "..":
                break
            fixed.append(segment)
        roots.add("/".join(fixed) or ".")
    if "." in roots:
        return ["."]
    # A root inside another one is walked with it.
    return sorted(r for r in roots if not any(r.startswith(o + "/") for o in roots))


def select(parsed: list[tuple[bool, str]], files: list[str]) -> list[str]:
    """The files (workspace-relative paths) the patterns select, in path order."""
    rules = [(exclude, pattern_regex(pattern)) for exclude, pattern in parsed]
    chosen: list[str] = []
    for path in files:
        ancestors = [path]
        parts = path.split("/")
        ancestors += ["/".join(parts[:n]) for n in range(1, len(parts))]
        included = False
        for exclude, regex in rules:
            if any(regex.fullmatch(candidate) for candidate in ancestors):
                included = not exclude
        if included:
            chosen.append(path)
    if len(chosen) > MAX_FILES:
        raise ExpressionEvalError(f"hashFiles matched more than {MAX_FILES} files")
    return sorted(chosen, key=lambda p: p.split("/"))


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
        total = hashlib.sha256()
        hashed = 0
        for line in digests.decode("ascii", "replace").splitlines():
            line = line.strip()
            if len(line) == 64:
                total.update(bytes.fromhex(line))
                hashed += 1
        return total.hexdigest() if hashed else ""
