"""Label and field selectors with the syntax and error messages of the Kubernetes API server."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.k8s_emulator.errors import ApiError

Obj = dict[str, Any]

_SET_TERM = re.compile(r"^(!?)\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\((.*)\)$")
_KEY = re.compile(r"^[A-Za-z0-9./_-]+$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value in self.values
        if self.op == "!=":
            return not present or value not in self.values
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_terms(text: str) -> list[str]:
    """Split at commas outside parentheses: `a in (x,y),b=c` is two terms."""
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t.strip() for t in terms if t.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    if not text:
        return []
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        requirements.append(_parse_label_term(term, text))
    return requirements


def _parse_label_term(term: str, whole: str) -> Requirement:
    def bad() -> ApiError:
        return ApiError.bad_request(f'unable to parse requirement: found "{term}" in "{whole}"')

    set_match = _SET_TERM.match(term)
    if set_match:
        if set_match.group(1):
            raise bad()
        values = frozenset(v.strip() for v in set_match.group(4).split(",") if v.strip())
        return Requirement(set_match.group(2), set_match.group(3), values)
    for op, name in (("!=", "!="), ("==", "="), ("=", "=")):
        if op in term:
            key, _, value = term.partition(op)
            key, value = key.strip(), value.strip()
            if not _KEY.match(key) or " " in value:
                raise bad()
            return Requirement(key, name, frozenset({value}))
    if term.startswith("!"):
        key = term[1:].strip()
        if not _KEY.match(key):
            raise bad()
        return Requirement(key, "!exists")
    if not _KEY.match(term):
        raise bad()
    return Requirement(term, "exists")


def labels_match(requirements: list[Requirement], obj: Obj) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


# Field labels each resource supports, as the real registry strategies declare them.
FIELD_PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "pods": {
        "metadata.name": ("metadata", "name"),
        "metadata.namespace": ("metadata", "namespace"),
        "status.phase": ("status", "phase"),
        "spec.nodeName": ("spec", "nodeName"),
        "spec.restartPolicy": ("spec", "restartPolicy"),
        "spec.schedulerName": ("spec", "schedulerName"),
        "spec.serviceAccountName": ("spec", "serviceAccountName"),
        "status.podIP": ("status", "podIP"),
    },
    "jobs": {
        "metadata.name": ("metadata", "name"),
        "metadata.namespace": ("metadata", "namespace"),
        "status.successful": ("status", "succeeded"),
    },
    "events": {
        "metadata.name": ("metadata", "name"),
        "metadata.namespace": ("metadata", "namespace"),
        "involvedObject.kind": ("involvedObject", "kind"),
        "involvedObject.name": ("involvedObject", "name"),
        "involvedObject.uid": ("involvedObject", "uid"),
        "involvedObject.namespace": ("involvedObject", "namespace"),
        "reason": ("reason",),
        "type": ("type",),
    },
    "secrets": {
        "metadata.name": ("metadata", "name"),
        "metadata.namespace": ("metadata", "namespace"),
        "type": ("type",),
    },
}


@dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    negate: bool
    value: str

    def matches(self, obj: Obj) -> bool:
        current: Any = obj
        for part in self.path:
            current = current.get(part) if isinstance(current, dict) else None
        actual = "" if current is None else str(current)
        return (actual != self.value) if self.negate else (actual == self.value)


def parse_field_selector(resource: str, text: str | None) -> list[FieldRequirement]:
    if not text:
        return []
    supported = FIELD_PATHS.get(resource, {})
    requirements: list[FieldRequirement] = []
    for term in _split_terms(text):
        for op in ("!=", "==", "="):
            if op in term:
                key, _, value = term.partition(op)
                break
        else:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        key = key.strip()
        if key not in supported:
            raise ApiError.bad_request(f"field label not supported: {key}")
        requirements.append(FieldRequirement(supported[key], op == "!=", value.strip()))
    return requirements


def fields_match(requirements: list[FieldRequirement], obj: Obj) -> bool:
    return all(r.matches(obj) for r in requirements)
