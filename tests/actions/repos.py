"""Bare git repositories for action tests (no network): a work tree pushing to
`<base>/<owner>/<name>.git`, which is what ACTIONS_URL=<base> serves."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


class Repo:
    """A work repository pushing to a bare one at <base>/<owner>/<name>.git."""

    def __init__(self, base: Path, owner: str, name: str) -> None:
        self.bare = base / owner / f"{name}.git"
        self.bare.mkdir(parents=True)
        git("init", "--quiet", "--bare", str(self.bare), cwd=base)
        self.work = base / "work" / owner / name
        self.work.mkdir(parents=True)
        git("init", "--quiet", "-b", "main", cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def commit(
        self, files: dict[str, str], message: str = "c", links: dict[str, str] | None = None
    ) -> str:
        for name, content in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        for name, target in (links or {}).items():
            (self.work / name).symlink_to(target)
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        git("push", "--quiet", "--force", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def tag(self, name: str, annotated: bool = False) -> None:
        extra = ["-a", "-m", name] if annotated else []
        git("tag", "--force", *extra, name, cwd=self.work)
        git("push", "--quiet", "--force", "origin", f"refs/tags/{name}", cwd=self.work)
