"""`hashFiles(patterns...)` over a job's workspace, as GitHub computes it: the SHA-256 of the
concatenated SHA-256 digests of every matching regular file, in path order; "" when none match.

Bounded (files and bytes) because it runs inside expression evaluation, synchronously.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from app.workflow.expressions import ExpressionEvalError

MAX_FILES = 10_000
MAX_BYTES = 512 * 1024 * 1024


def hash_files(workspace: str) -> Callable[[list[str]], str]:
    root = Path(workspace)

    def compute(patterns: list[str]) -> str:
        include = [p for p in patterns if not p.startswith("!")]
        exclude = [p[1:] for p in patterns if p.startswith("!")]
        matched: set[Path] = set()
        for pattern in include:
            for path in root.glob(pattern):
                if path.is_file() and not any(path.match(e) for e in exclude):
                    matched.add(path)
                    if len(matched) > MAX_FILES:
                        raise ExpressionEvalError(f"hashFiles matched more than {MAX_FILES} files")
        if not matched:
            return ""
        outer = hashlib.sha256()
        total = 0
        for path in sorted(matched):
            inner = hashlib.sha256()
            with path.open("rb") as handle:
                while chunk := handle.read(1024 * 1024):
                    total += len(chunk)
                    if total > MAX_BYTES:
                        raise ExpressionEvalError("hashFiles read more than 512 MiB")
                    inner.update(chunk)
            outer.update(inner.digest())
        return outer.hexdigest()

    return compute
