"""The end-of-step scan in LOCAL_ISOLATION=none reads only processes created since the step
started (app/runners/sandbox.py `PidWindow`), and still finds every one of those."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator

import pytest

from app.runners.sandbox import TRACK_VAR, kill_tracked, pid_window, tracked_pids


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
    return subprocess.Popen(
        ["sleep", "300"], env={**os.environ, TRACK_VAR: track}, start_new_session=True
    )


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
