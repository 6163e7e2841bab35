"""Finding a step's processes from the host (for tests that check nothing outlives a step)."""

from __future__ import annotations

import os


def pids_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains `marker`, seen from the host:
    works for steps in their own PID namespace, whose `$!` means nothing out here."""
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry.name}/stat") as f:
                state = f.read().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found
