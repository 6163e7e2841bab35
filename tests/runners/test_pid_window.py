"""The end-of-step scan in LOCAL_ISOLATION=none reads only processes created since the step
started (app/runners/sandbox.py `PidWindow`), and still finds every one of those."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.runners.sandbox import (
    TRACK_VAR,
    PidWindow,
    kill_tracked,
    pid_window,
    recent_pids,
    tracked_pids,
)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _sleeper(track: str) -> subprocess.Popen[bytes]:
    # Its own session, as a `setsid` escapee of a step would be.
    proc = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, TRACK_VAR: track}, start_new_session=True
    )
    # Popen returns once exec has begun (its error pipe closes on exec), which is a moment
    # before the kernel has set up the new environment: /proc/<pid>/environ can still read
    # empty then. A step's scan runs long after its processes started; wait for that state.
    marker = f"{TRACK_VAR}={track}".encode()
    deadline = time.monotonic() + 10
    while marker not in Path(f"/proc/{proc.pid}/environ").read_bytes():
        assert time.monotonic() < deadline, "the process's environment never appeared"
        os.sched_yield()
    return proc


def test_window_scan_finds_processes_created_since_and_skips_older_ones(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    prefix = f"test-{secrets.token_hex(6)}/"
    older = _sleeper(f"{prefix}older")
    spawned.append(older)
    window = pid_window()
    assert window is not None  # Linux with ns_last_pid: the bench and CI machines
    newer = [_sleeper(f"{prefix}newer{i}") for i in range(3)]
    spawned.extend(newer)
    assert sorted(tracked_pids(prefix, window)) == sorted(p.pid for p in newer)
    # Without a window (a crashed replica's leftovers): every process is looked at.
    assert sorted(tracked_pids(prefix)) == sorted(p.pid for p in [older, *newer])
    assert kill_tracked(prefix, window=window) == 3
    assert [p.wait(timeout=10) for p in newer] == [-signal.SIGKILL] * 3
    assert older.poll() is None


def test_recent_pids_bounds_the_window_or_gives_up() -> None:
    now = pid_window()
    assert now is not None
    recent = recent_pids(PidWindow(now.last_pid - 3, now.forks - 3))
    # Another process may fork meanwhile (a shared machine): then the list is longer, or None.
    assert recent is None or recent[:3] == [now.last_pid - 2, now.last_pid - 1, now.last_pid]
    assert recent_pids(PidWindow(now.last_pid - 1000, now.forks - 1000)) is None
    assert recent_pids(None) is None


def test_a_listed_thread_is_not_taken_for_its_process(
    spawned: list[subprocess.Popen[bytes]],
) -> None:
    # Threads take pids from the same counter, so `recent_pids` lists them too; their
    # /proc/<tid>/environ is their process's, which must be counted (and signalled) once.
    prefix = f"test-{secrets.token_hex(6)}/"
    program = "import threading, time; threading.Thread(target=time.sleep, args=(300,)).start()"
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{program}; print(flush=True); time.sleep(300)"],
        env={**os.environ, TRACK_VAR: f"{prefix}threads"},
        stdout=subprocess.PIPE,
    )
    spawned.append(proc)
    assert proc.stdout is not None
    proc.stdout.readline()  # its thread runs
    tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
    assert len(tids) == 2
    assert tracked_pids(prefix, pids=sorted(tids)) == [proc.pid]
    assert kill_tracked(prefix, pids=sorted(tids)) == 1
    assert proc.wait(timeout=10) == -signal.SIGKILL
    proc.stdout.close()
