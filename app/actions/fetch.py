"""Actions from git: `uses: owner/repo@ref` and `owner/repo/path@ref`.

The repository is looked up under `ACTIONS_URL` (`https://github.com` by default; an internal
mirror, a Gitea, or a local directory holding `<owner>/<repo>.git` bare repositories work the
same), the ref is resolved to a commit with `git ls-remote`, and that commit's tree is fetched
once (`--depth 1`) into `ACTIONS_CACHE_DIR/<owner>/<repo>/<commit>`. A commit never changes, so
the cache needs no invalidation: a moved tag or branch simply resolves to another commit.

Concurrency: builds on one executor (and several executor processes sharing the directory) fetch
under an exclusive `flock` per commit and publish the tree with one atomic rename, so a reader
sees either no directory or a complete one.

We drive the `git` binary rather than a library: it is what speaks every transport (https, ssh,
file, credential helpers, proxies) exactly as operators configure it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from app.actions.errors import ActionError, ActionInfraError
from app.actions.manifest import ActionManifest, load_manifest

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SHA = re.compile(r"^[0-9a-f]{40}$")
_COMPLETE = ".ci-executor-complete"


@dataclass(frozen=True)
class ActionRef:
    owner: str
    repo: str
    path: str  # "" for the repository root
    ref: str

    @property
    def slug(self) -> str:
        tail = f"/{self.path}" if self.path else ""
        return f"{self.owner}/{self.repo}{tail}@{self.ref}"


def parse_uses(uses: str) -> ActionRef:
    """`owner/repo[/path]@ref` (refuses local paths, docker:// and reusable workflows: callers
    handle those before asking git)."""
    text = uses.strip()
    if text.startswith(("./", "../")) or text == ".":
        raise ActionError(f"{uses!r} is a local action, not one fetched from git")
    if text.startswith("docker://"):
        raise ActionError(f"{uses!r}: Docker actions are not supported yet")
    spec, at, ref = text.rpartition("@")
    if not at or not spec or not ref:
        raise ActionError(f"{uses!r}: expected owner/repo@ref or owner/repo/path@ref")
    parts = spec.split("/")
    if len(parts) < 2 or not all(parts):
        raise ActionError(f"{uses!r}: expected owner/repo@ref or owner/repo/path@ref")
    owner, repo, *rest = parts
    if not _NAME.match(owner) or not _NAME.match(repo) or repo in (".", ".."):
        raise ActionError(f"{uses!r}: invalid owner or repository name")
    if any(p in (".", "..") for p in rest):
        raise ActionError(f"{uses!r}: the action path may not contain . or ..")
    if ".github/workflows/" in spec + "/" and spec.endswith((".yml", ".yaml")):
        raise ActionError(f"{uses!r}: reusable workflows are not supported yet")
    if ref.startswith("-") or any(c in ref for c in " \t\n~^:?*[\\") or ".." in ref:
        raise ActionError(f"{uses!r}: invalid ref {ref!r}")
    return ActionRef(owner, repo, "/".join(rest), ref)


@dataclass(frozen=True)
class FetchedAction:
    ref: ActionRef
    commit: str
    root: Path  # the repository's tree at `commit` (read-only by convention)
    directory: Path  # the action's own directory (root / path)
    manifest: ActionManifest


class ActionFetcher:
    def __init__(self, base_url: str, cache_dir: Path, timeout: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.cache_dir = cache_dir.resolve()
        self.timeout = timeout

    def repository_url(self, ref: ActionRef) -> str:
        base = self.base_url
        local = Path(base[7:] if base.startswith("file://") else base)
        if "://" not in base or base.startswith("file://"):
            # A directory of mirrors: <owner>/<repo>.git (bare) or <owner>/<repo>.
            for candidate in (local / ref.owner / f"{ref.repo}.git", local / ref.owner / ref.repo):
                if candidate.exists():
                    return str(candidate)
            return str(local / ref.owner / f"{ref.repo}.git")
        return f"{base}/{ref.owner}/{ref.repo}"

    async def fetch(self, uses: str | ActionRef) -> FetchedAction:
        ref = parse_uses(uses) if isinstance(uses, str) else uses
        url = self.repository_url(ref)
        commit, refname = await self._resolve(url, ref)
        root = self.cache_dir / ref.owner / ref.repo / commit
        if not (root / _COMPLETE).is_file():
            await asyncio.to_thread(self.cache_dir.mkdir, parents=True, exist_ok=True)
            await self._fetch_locked(url, ref, commit, refname, root)
        directory = root / ref.path if ref.path else root
        manifest = await asyncio.to_thread(load_manifest, directory, ref.slug)
        return FetchedAction(ref, commit, root, directory, manifest)

    async def _git(self, *args: str, cwd: Path | None = None) -> str:
        env = {
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a private repository
            "GIT_ASKPASS": "true",
            "LC_ALL": "C",
        }
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ActionInfraError(f"git {args[0]} timed out after {self.timeout:g}s") from None
        if proc.returncode != 0:
            raise _GitFailed(err.decode(errors="replace").strip())
        return out.decode(errors="replace")

    async def _resolve(self, url: str, ref: ActionRef) -> tuple[str, str | None]:
        """The commit `ref.ref` names, and the full ref name to fetch (None for a sha)."""
        if _SHA.match(ref.ref):
            return ref.ref, None
        try:
            listing = await self._git("ls-remote", "--", url, ref.ref, f"{ref.ref}^{{}}")
        except _GitFailed as exc:
            raise _unreachable(ref, url, str(exc)) from None
        found: dict[str, str] = {}
        for line in listing.splitlines():
            sha, _, name = line.partition("\t")
            found[name] = sha
        # A tag wins over a branch of the same name (as on GitHub); an annotated tag is peeled.
        for name in (f"refs/tags/{ref.ref}", f"refs/heads/{ref.ref}", ref.ref):
            peeled = found.get(f"{name}^{{}}")
            if peeled or name in found:
                return peeled or found[name], name
        raise ActionError(f"{ref.slug}: no tag or branch {ref.ref!r} in {ref.owner}/{ref.repo}")

    async def _fetch_locked(
        self, url: str, ref: ActionRef, commit: str, refname: str | None, root: Path
    ) -> None:
        lock_path = root.parent / f"{commit}.lock"
        await asyncio.to_thread(root.parent.mkdir, parents=True, exist_ok=True)
        handle = await asyncio.to_thread(open, lock_path, "a+")
        try:
            await asyncio.to_thread(fcntl.flock, handle.fileno(), fcntl.LOCK_EX)
            if (root / _COMPLETE).is_file():
                return  # another fetcher finished while we waited
            staging = root.parent / f".{commit}.{uuid.uuid4().hex}"
            try:
                await self._checkout(url, ref, commit, refname, staging)
                await asyncio.to_thread(_publish, staging, root)
            finally:
                await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        finally:
            await asyncio.to_thread(handle.close)  # closing releases the lock

    async def _checkout(
        self, url: str, ref: ActionRef, commit: str, refname: str | None, staging: Path
    ) -> None:
        gitdir = staging / ".git"
        await self._git("init", "--quiet", str(staging))
        try:
            await self._git(
                "--git-dir",
                str(gitdir),
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                "--",
                url,
                refname or commit,
            )
        except _GitFailed as exc:
            if refname is None:
                raise ActionError(
                    f"{ref.slug}: commit {commit} not found in {ref.owner}/{ref.repo}"
                ) from None
            raise _unreachable(ref, url, str(exc)) from None
        fetched = (
            await self._git("--git-dir", str(gitdir), "rev-parse", "FETCH_HEAD^{commit}")
        ).strip()
        if fetched != commit:
            # The ref moved between ls-remote and fetch: use what we resolved, never a mix.
            raise ActionInfraError(f"{ref.slug}: the ref moved while fetching; retry")
        await self._git(
            "--git-dir",
            str(gitdir),
            "--work-tree",
            str(staging),
            "checkout",
            "--quiet",
            "--force",
            commit,
            "--",
            ".",
        )
        await asyncio.to_thread(shutil.rmtree, gitdir)
        await asyncio.to_thread((staging / _COMPLETE).write_text, commit + "\n")


class _GitFailed(Exception):
    pass


def _unreachable(ref: ActionRef, url: str, stderr: str) -> ActionError:
    shown = _redact(url)
    lowered = stderr.lower()
    if any(
        s in lowered
        for s in (
            "not found",
            "does not appear to be a git repository",
            "does not exist",
            "authentication failed",
            "could not read",
        )
    ):
        return ActionError(
            f"{ref.slug}: repository {ref.owner}/{ref.repo} not found at {shown} "
            "(check ACTIONS_URL and that the mirror has it)"
        )
    return ActionInfraError(f"{ref.slug}: fetching from {shown} failed: {stderr[-300:]}")


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password or parts.username:
        return parts._replace(netloc=parts.hostname or "").geturl()
    return url


def _publish(staging: Path, root: Path) -> None:
    if root.exists():  # an incomplete leftover of a crashed fetch
        shutil.rmtree(root)
    os.replace(staging, root)
