"""Object storage with a global resourceVersion counter, a bounded watch history and watchers.

Everything here is synchronous and runs on the event loop thread, so a write, its event and the
fan-out to watchers happen atomically with respect to every other request.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.k8s_emulator.errors import ApiError
from tests.k8s_emulator.selectors import (
    FieldRequirement,
    Requirement,
    fields_match,
    labels_match,
)

Obj = dict[str, Any]

# Events kept for resuming watches; an older resourceVersion is answered with 410 Gone.
HISTORY_SIZE = 5000


@dataclass(frozen=True)
class Kind:
    resource: str
    group: str
    kind: str
    version: str = "v1"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def not_found(self, name: str) -> ApiError:
        return ApiError.not_found(self.qualified, self.group, self.resource, name)


JOBS = Kind("jobs", "batch", "Job")
PODS = Kind("pods", "", "Pod")
SECRETS = Kind("secrets", "", "Secret")
EVENTS = Kind("events", "", "Event")
KINDS = {k.resource: k for k in (JOBS, PODS, SECRETS, EVENTS)}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: Obj) -> Obj:
    result: Obj = obj.setdefault("metadata", {})
    return result


@dataclass(frozen=True)
class Event:
    rv: int
    kind: Kind
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


class WatchEnd(Exception):
    """Queued to a watcher to end its stream; `abrupt` drops the connection mid-stream."""

    def __init__(self, abrupt: bool) -> None:
        super().__init__("watch ended by the emulator")
        self.abrupt = abrupt


@dataclass(eq=False)
class Watcher:
    kind: Kind
    namespace: str | None
    labels: list[Requirement]
    fields: list[FieldRequirement]
    queue: asyncio.Queue[tuple[str, Obj] | WatchEnd] = field(default_factory=asyncio.Queue)

    def _selected(self, obj: Obj) -> bool:
        return labels_match(self.labels, obj) and fields_match(self.fields, obj)

    def offer(self, event: Event) -> None:
        if event.kind != self.kind:
            return
        if self.namespace is not None and event.obj["metadata"].get("namespace") != self.namespace:
            return
        now_in = self._selected(event.obj)
        if event.type == "MODIFIED":
            was_in = event.old is not None and self._selected(event.old)
            # Like the watch cache: an object leaving the selection is DELETED for this watcher,
            # one entering it is ADDED.
            if now_in and was_in:
                kind = "MODIFIED"
            elif now_in:
                kind = "ADDED"
            elif was_in:
                kind = "DELETED"
            else:
                return
        elif now_in:
            kind = event.type
        else:
            return
        self.queue.put_nowait((kind, event.obj))


class Store:
    def __init__(self) -> None:
        self.rv = 0
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._history: deque[Event] = deque()
        self.compacted_rv = 0  # events up to this resourceVersion are no longer replayable
        self._watchers: set[Watcher] = set()
        self.listeners: list[Callable[[Event], None]] = []

    def _emit(self, kind: Kind, type_: str, obj: Obj, old: Obj | None) -> None:
        event = Event(self.rv, kind, type_, obj, old)
        if len(self._history) >= HISTORY_SIZE:
            self.compacted_rv = self._history.popleft().rv
        self._history.append(event)
        for watcher in list(self._watchers):
            watcher.offer(event)
        for listener in self.listeners:
            listener(event)

    def compact(self) -> None:
        self._history.clear()
        self.compacted_rv = self.rv

    def _stamp(self, kind: Kind, obj: Obj) -> Obj:
        self.rv += 1
        obj["kind"] = kind.kind
        obj["apiVersion"] = kind.api_version
        meta(obj)["resourceVersion"] = str(self.rv)
        return obj

    def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        return self._objects.get((kind.resource, namespace, name))

    def require(self, kind: Kind, namespace: str, name: str) -> Obj:
        obj = self.get(kind, namespace, name)
        if obj is None:
            raise kind.not_found(name)
        return obj

    def query(
        self,
        kind: Kind,
        namespace: str | None,
        labels: list[Requirement] | None = None,
        fields: list[FieldRequirement] | None = None,
    ) -> list[Obj]:
        found = [
            obj
            for (resource, ns, _), obj in self._objects.items()
            if resource == kind.resource and (namespace is None or ns == namespace)
        ]
        found = [
            o for o in found if labels_match(labels or [], o) and fields_match(fields or [], o)
        ]
        return sorted(found, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))

    def all_in_namespace(self, namespace: str) -> list[tuple[Kind, Obj]]:
        return [
            (KINDS[resource], obj)
            for (resource, ns, _), obj in self._objects.items()
            if ns == namespace
        ]

    def create(self, kind: Kind, obj: Obj) -> Obj:
        md = meta(obj)
        key = (kind.resource, md["namespace"], md["name"])
        if key in self._objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind.qualified} "{md["name"]}" already exists',
                {"name": md["name"], "group": kind.group, "kind": kind.resource},
            )
        self._stamp(kind, obj)
        self._objects[key] = obj
        self._emit(kind, "ADDED", obj, None)
        return obj

    def modify(
        self, kind: Kind, namespace: str, name: str, change: Callable[[Obj], None]
    ) -> Obj | None:
        """Apply `change` to a copy and store it as a new version; None if the object is gone.
        Stored versions are never mutated, so events already queued keep their snapshot."""
        old = self.get(kind, namespace, name)
        if old is None:
            return None
        new = copy.deepcopy(old)
        change(new)
        if new == old:
            return old
        self._stamp(kind, new)
        self._objects[(kind.resource, namespace, name)] = new
        self._emit(kind, "MODIFIED", new, old)
        return new

    def remove(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        old = self._objects.pop((kind.resource, namespace, name), None)
        if old is None:
            return None
        gone = copy.deepcopy(old)
        self._stamp(kind, gone)
        self._emit(kind, "DELETED", gone, old)
        return gone

    def watch(
        self,
        kind: Kind,
        namespace: str | None,
        labels: list[Requirement],
        fields: list[FieldRequirement],
        resource_version: str | None,
    ) -> Watcher:
        watcher = Watcher(kind, namespace, labels, fields)
        if resource_version in (None, "", "0"):
            # "Start at most recent": synthetic ADDED events for the current state, then live.
            for obj in self.query(kind, namespace, labels, fields):
                watcher.queue.put_nowait(("ADDED", obj))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise ApiError.bad_request(
                    f'invalid resource version "{resource_version}"'
                ) from None
            if since < self.compacted_rv:
                watcher.queue.put_nowait(("ERROR", self.gone_status(since)))
                watcher.queue.put_nowait(WatchEnd(abrupt=False))
                return watcher
            for event in self._history:
                if event.rv > since:
                    watcher.offer(event)
        self._watchers.add(watcher)
        return watcher

    def gone_status(self, since: int) -> Obj:
        return ApiError(
            410, "Expired", f"too old resource version: {since} ({self.compacted_rv + 1})"
        ).status()

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def end_watches(self, abrupt: bool) -> int:
        for watcher in self._watchers:
            watcher.queue.put_nowait(WatchEnd(abrupt))
        count = len(self._watchers)
        self._watchers.clear()
        return count
