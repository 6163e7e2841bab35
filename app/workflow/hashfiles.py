"""`hashFiles(patterns...)` as GitHub's runner computes it, for every runner.

The rules are @actions/glob's, as the runner's `hashFiles` uses it:

- one pattern per argument (or per line); `#` lines are comments; `!pattern` excludes what the
  patterns before it selected; a later include can select it again;
- `*` and `?` match within a path segment, `[...]` a character class, `**` any number of
  segments; dotfiles are matched;
- a pattern that matches a directory matches every file beneath it (`implicitDescendants`);
- patterns are relative to the workspace; an absolute pattern counts only inside it.

The result is the SHA-256 of the concatenated SHA-256 digests of the selected regular files, in
path order; "" when nothing matches. The selection (`parse_patterns`, `search_roots`, `select`) is
pure, so the kubernetes runner applies the same rules to a file list read from its pod; here,
`hash_files(workspace)` walks a directory on this machine (the local runner's workspace).
Bounded (files and bytes) because it runs inside expression evaluation, synchronously.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable

from app.workflow.expressions import ExpressionEvalError

MAX_FILES = 10_000  # selected files
MAX_LISTED = 200_000  # files looked at under the patterns' directories
MAX_BYTES = 512 * 1024 * 1024
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
    """The fixed leading part of each include pattern (what has to be walked): a literal
    pattern (`Cargo.lock`, `src`) is its own root, so naming one file never lists the whole
    workspace."""
    roots: set[str] = set()
    for exclude, pattern in parsed:
        if exclude:
            continue
        fixed: list[str] = []
        segments = [s for s in pattern.split("/") if s not in ("", ".")]
        for segment in segments:
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


def combine(digests: Iterable[bytes]) -> str:
    """GitHub's result from the selected files' SHA-256 digests, in path order."""
    total = hashlib.sha256()
    hashed = False
    for digest in digests:
        total.update(digest)
        hashed = True
    return total.hexdigest() if hashed else ""


def _listing(workspace: str, roots: list[str]) -> list[str]:
    """Workspace-relative paths of the regular files under `roots` (links to files count, as
    @actions/glob follows them; a link's target outside the workspace is skipped)."""
    top = os.path.realpath(workspace)
    files: list[str] = []
    for root in roots:
        base = os.path.join(workspace, root)
        walked = (
            [(os.path.dirname(base), [], [os.path.basename(base)])]
            if os.path.isfile(base)
            else os.walk(base)
        )
        for directory, _, names in walked:
            for name in names:
                path = os.path.join(directory, name)
                real = os.path.realpath(path)
                if os.path.isfile(real) and (real == top or real.startswith(top + os.sep)):
                    files.append(os.path.relpath(path, workspace))
                    if len(files) > MAX_LISTED:
                        raise ExpressionEvalError(
                            f"hashFiles: more than {MAX_LISTED} files to look at"
                        )
    return files


def _digest(path: str, budget: list[int]) -> bytes:
    one = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise ExpressionEvalError("hashFiles read more than 512 MiB")
                one.update(chunk)
    except OSError as exc:
        name = os.path.basename(path)
        raise ExpressionEvalError(f"hashFiles: cannot read {name}: {exc.strerror}") from None
    return one.digest()


def hash_files(workspace: str) -> Callable[[list[str]], str]:
    """The expression engine's `hash_files` callback for a workspace on this machine."""

    def compute(patterns: list[str]) -> str:
        parsed = parse_patterns(patterns, workspace)
        if not any(not exclude for exclude, _ in parsed):
            return ""
        chosen = select(parsed, _listing(workspace, search_roots(parsed)))
        budget = [MAX_BYTES]
        return combine(_digest(os.path.join(workspace, p), budget) for p in chosen)

    return compute
