"""Kept for imports written before tests/support/ existed: new code imports `tests.support`."""

from __future__ import annotations

from tests.support import *  # noqa: F403 (everything tests.support exports)
from tests.support import __all__ as __all__
