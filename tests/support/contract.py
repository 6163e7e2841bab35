"""The status transitions the contract allows (DESIGN's state machine), written out here rather
than read from app/services/state.py, so the tests check the module against the contract."""

from __future__ import annotations

LEGAL_BUILD: set[tuple[str, str]] = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "error"),
    ("running", "success"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "timed_out"),
    ("running", "error"),
}
# Jobs and steps share one vocabulary and one table.
LEGAL_UNIT: set[tuple[str, str]] = {
    ("pending", "running"),
    ("pending", "skipped"),
    ("pending", "cancelled"),
    ("pending", "error"),
    ("running", "success"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "timed_out"),
    ("running", "error"),
}
