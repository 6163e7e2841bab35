"""The files of one step invocation in the local runner's job temp dir: its runtime files
($GITHUB_OUTPUT, _ENV, _PATH, _STATE, _STEP_SUMMARY) emptied before it and read back after it,
and its script. The steps can write that directory, so nothing here follows a symlink or opens a
FIFO a step left there, and the directory itself is reached from the build's directory without
following one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from app.workflow.runtime import MAX_FILE_BYTES, RuntimeFiles

# A step's few small files (its runtime files, its script) are written and read on the event
# loop: tens of microseconds of local I/O, where a worker-thread trip cost 0.5-2 ms a step on the
# loaded bench machine. Anything bigger still goes to a worker thread.
INLINE_BYTES = 256 * 1024


def open_temp(build_dir: Path, temp: Path) -> int:
    """The job's temp dir, opened from the build's directory without following a symlink: a
    step can replace any directory of its build but the build's own (its sandbox's mount point),
    and must not point the service's writes and reads at another directory (another build's)."""
    fd = os.open(build_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in temp.relative_to(build_dir).parts:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_regular(folder: int, name: str, flags: int) -> int:
    """Open a file of the job's temp dir (`folder`), which its steps can write: never through a
    symlink a step left there (the service would write or read a file the step cannot), never a
    FIFO or device (opened non-blocking, then refused)."""
    flags |= os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(name, flags, 0o666, dir_fd=folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{name} is not a regular file")
    return fd


def _writable(folder: int, name: str, flags: int) -> int:
    """Open (creating) a file of the temp dir to write it. What an earlier step left at that
    path instead of a regular file (a symlink, a FIFO) is removed first, not written through."""
    flags |= os.O_WRONLY | os.O_CREAT
    try:
        return _open_regular(folder, name, flags)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder)  # the link itself, never its target
        return _open_regular(folder, name, flags | os.O_EXCL)


Found = dict[str, os.stat_result | None]


def look(folder: int, names: Iterable[str]) -> Found:
    """One lstat of each file of the temp dir (None: missing). A step's files are checked once
    before it and once after it, and each check below reuses these results instead of its
    own lstat (four passes over the same six files cost ~0.1 ms of a ~2.5 ms step here)."""
    found: Found = {}
    for name in names:
        try:
            found[name] = os.lstat(name, dir_fd=folder)
        except OSError:
            found[name] = None
    return found


def _empty(found: os.stat_result | None) -> bool:
    """An empty regular file (not a link to one)? Most steps write none of their runtime
    files: the lstat decides, where opening to truncate or read cost three calls each."""
    return found is not None and stat.S_ISREG(found.st_mode) and found.st_size == 0


def prepare_files(
    folder: int, empty: Iterable[str], script: str, text: str, found: Found | None = None
) -> None:
    """Empty (create or truncate) the invocation's runtime files; write its script. `found`:
    what `look` saw of them just before (without it, they are looked at here)."""
    empty = list(empty)
    seen = found if found is not None else look(folder, empty)
    for name in empty:
        if not _empty(seen.get(name)):
            os.close(_writable(folder, name, os.O_TRUNC))
    if script:
        # Overwritten, then cut to length: truncating a file that holds data to zero first
        # makes ext4 write it back at close (auto_da_alloc), 3 ms here.
        data = text.encode()
        with open(_writable(folder, script, 0), "wb") as f:
            f.write(data)
            f.truncate(len(data))


def present(found: Found) -> bool:
    """Do all these files exist already (preparing them then creates nothing)?"""
    return all(entry is not None for entry in found.values())


def small(found: Found) -> bool:
    """Are these files small enough to read on the event loop (or missing)?"""
    return sum(entry.st_size for entry in found.values() if entry is not None) <= INLINE_BYTES


def read_runtime_files(
    folder: int, names: dict[str, str], found: Found | None = None
) -> RuntimeFiles:
    """An invocation's runtime files, each read up to MAX_FILE_BYTES (a step cannot make the
    service hold an arbitrarily large file in memory). `found`: what `look` saw of them just
    before, with nothing awaited in between (without it, they are looked at here)."""
    seen = found if found is not None else look(folder, names.values())
    texts: dict[str, str] = {}
    for key, name in names.items():
        if _empty(seen.get(name)):
            texts[key] = ""
            continue
        try:
            with open(_open_regular(folder, name, os.O_RDONLY), "rb") as handle:
                data = handle.read(MAX_FILE_BYTES)
        except OSError:
            data = b""
        texts[key] = data.decode("utf-8", "replace")
    return RuntimeFiles(
        output=texts.get("GITHUB_OUTPUT", ""),
        env=texts.get("GITHUB_ENV", ""),
        path=texts.get("GITHUB_PATH", ""),
        summary=texts.get("GITHUB_STEP_SUMMARY", ""),
        state=texts.get("GITHUB_STATE", ""),
    )


@functools.lru_cache(maxsize=1024)
def _names_in(temp: str, paths: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    names = []
    for key, path in paths:
        parent, _, name = path.rpartition("/")
        if Path(parent) != Path(temp) or not name:
            raise OSError(f"{path} is not in the job's temp dir")
        names.append((key, name))
    return tuple(names)


def names_in(temp: Path, files: dict[str, str]) -> dict[str, str]:
    """The runtime files' names in the temp dir, where the runtime puts them all (the same
    paths for every step of a local job: worked out once)."""
    return dict(_names_in(str(temp), tuple(files.items())))
