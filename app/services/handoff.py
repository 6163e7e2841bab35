"""Parsed workflows kept for the dispatch path of this replica.

A workflow is parsed (CPU, in a worker thread) when a build is created. The parsed spec is
kept here by the YAML's sha256, and the new build's id is noted with it: when the same replica
claims the build, its executor takes the spec from here, before its claim, instead of reading
the snapshot first and parsing it again in a worker thread; a create of a YAML seen recently
skips the worker thread too. Specs are never mutated (the parser already shares them through
its own cache). A build created elsewhere (another replica, before a restart) is simply not
noted here: its executor reads the snapshot first, as before.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from app.models import BuildSnapshot
from app.workflow import WorkflowSpec, parse_workflow

# As many specs as the parser's own cache keeps (app/workflow/parser.py); build ids noted but
# not yet claimed here beyond MAX_NOTED are forgotten (their executors read the snapshot).
MAX_SPECS = 64
MAX_NOTED = 1024


@dataclass(frozen=True)
class Noted:
    """What this replica's create wrote that its executor needs: the YAML's sha256, the spec
    and the pinned actions (every job row is pending, as the create wrote it, until claimed)."""

    sha256: str
    spec: WorkflowSpec
    actions: dict[str, Any] | None


class SpecCache:
    """Bounded LRU sha256 -> spec, and bounded build id -> sha256 notes taken once."""

    def __init__(self, specs: int = MAX_SPECS, noted: int = MAX_NOTED) -> None:
        self._max_specs = max(1, specs)
        self._max_noted = max(1, noted)
        self._specs: OrderedDict[str, WorkflowSpec] = OrderedDict()
        self._noted: OrderedDict[int, tuple[str, dict[str, Any] | None]] = OrderedDict()

    def get(self, sha256: str) -> WorkflowSpec | None:
        spec = self._specs.get(sha256)
        if spec is not None:
            self._specs.move_to_end(sha256)
        return spec

    def remember(self, sha256: str, spec: WorkflowSpec) -> None:
        self._specs[sha256] = spec
        self._specs.move_to_end(sha256)
        while len(self._specs) > self._max_specs:
            self._specs.popitem(last=False)

    def note(self, build_id: int, sha256: str, actions: dict[str, Any] | None = None) -> None:
        """A build created here with this YAML and these pinned actions: its executor may take
        them instead of reading the snapshot."""
        self._noted[build_id] = (sha256, actions)
        while len(self._noted) > self._max_noted:
            self._noted.popitem(last=False)

    def take(self, build_id: int) -> Noted | None:
        """What was noted for the build (once), if its spec is still here."""
        noted = self._noted.pop(build_id, None)
        spec = self.get(noted[0]) if noted is not None else None
        return Noted(noted[0], spec, noted[1]) if noted is not None and spec is not None else None


async def parsed_spec(
    specs: SpecCache | None, snapshot: BuildSnapshot | None
) -> WorkflowSpec | None:
    """The snapshot's workflow: from `specs`, or parsed off the event loop (and kept); None
    when there is no snapshot or it does not parse (the executor's `run` then reads and
    parses again, and records what is wrong)."""
    if snapshot is None:
        return None
    spec = specs.get(snapshot.yaml_sha256) if specs is not None else None
    if spec is not None:
        return spec
    try:
        spec = await asyncio.to_thread(parse_workflow, snapshot.workflow_yaml)
    except Exception:
        return None
    if specs is not None:
        specs.remember(snapshot.yaml_sha256, spec)
    return spec
