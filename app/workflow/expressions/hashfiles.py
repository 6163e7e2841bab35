"""`hashFiles(...)` for a workspace, as GitHub's runner computes it.

The expression engine takes `hash_files` as a callback because only the runner knows the files;
`workspace_hasher(workspace)` builds that callback for a directory on this machine (the local
runner's workspace). It is the one part of this package that reads files, and only when called.

GitHub's algorithm (actions/runner, `hashFiles`): the patterns are glob lines (`**` any depth,
`!` excludes what earlier lines matched); every matched regular file inside the workspace is hashed
with SHA-256, the digests are fed in order into one more SHA-256, and its hex digest is the result;
no match gives ''. We visit files in sorted order so that the same files always give the same hash
(GitHub uses directory order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from app.workflow.expressions.errors import ExpressionEvalError

# A pattern such as `**/*` over a huge tree must not hash forever.
MAX_FILES = 100_000
_CHUNK = 1024 * 1024


def workspace_hasher(workspace: str | Path) -> Callable[[list[str]], str]:
    root = Path(workspace)

    def hash_files(patterns: list[str]) -> str:
        return hash_workspace_files(root, patterns)

    return hash_files


def hash_workspace_files(workspace: Path, patterns: list[str]) -> str:
    root = workspace.resolve()
    selected: set[Path] = set()
    for raw in "\n".join(patterns).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclude = line.startswith("!")
        pattern = _relative(root, line[1:] if exclude else line)
        if pattern is None:
            continue
        globs = [pattern]
        if pattern == "**" or pattern.endswith("/**"):
            # Python's trailing `**` yields directories only; a glob line means their files too.
            globs.append(pattern + "/*")
        matches = {p for g in globs for p in root.glob(g) if _inside(root, p)}
        if exclude:
            selected -= matches
        else:
            selected |= matches
        if len(selected) > MAX_FILES:
            raise ExpressionEvalError(f"hashFiles: the patterns match more than {MAX_FILES} files")
    files = sorted(p for p in selected if p.is_file())
    if not files:
        return ""
    total = hashlib.sha256()
    for path in files:
        one = hashlib.sha256()
        try:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    one.update(chunk)
        except OSError as exc:
            raise ExpressionEvalError(
                f"hashFiles: cannot read {path.name}: {exc.strerror}"
            ) from None
        total.update(one.digest())
    return total.hexdigest()


def _relative(root: Path, pattern: str) -> str | None:
    """The pattern relative to the workspace; None for an absolute path outside it."""
    pattern = pattern.strip()
    if not pattern:
        return None
    if pattern.startswith("/"):
        try:
            return str(Path(pattern).relative_to(root))
        except ValueError:
            return None
    return pattern.removeprefix("./")


def _inside(root: Path, path: Path) -> bool:
    """Symbolic links may point anywhere; GitHub hashes only files inside the workspace."""
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True
