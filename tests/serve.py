"""Kept for imports written before tests/support/ existed: new code imports `tests.support`."""

from __future__ import annotations

from tests.support.servers import CLI, ROOT, ServeProcess, start_serve

__all__ = ["CLI", "ROOT", "ServeProcess", "start_serve"]
