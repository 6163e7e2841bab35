"""`strategy.matrix` expansion with GitHub's include/exclude semantics, on validated string values.

1. Take the cartesian product of the axes (the matrix keys other than include/exclude), in key
   order; with no axes there are no base combinations.
2. Remove every combination that matches an `exclude` entry on all of the entry's keys.
3. For each `include` entry, in order: merge it into every remaining base combination whose original
   axis values it does not contradict (its extra keys are added, and may overwrite keys an
   earlier include added, never an axis value). If it fits no base combination it becomes a
   combination of its own. Entries are never merged into combinations that an earlier include
   created, which is what GitHub does (see the "fruit/animal" example in its workflow syntax
   reference).
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

Combination = dict[str, Any]  # values: strings (scalars as text), lists or mappings

# GitHub's limit; also what keeps a typo like a 20-value axis times four others from flooding the
# queue with jobs.
MAX_COMBINATIONS = 256

# A template reference to one matrix value. Only this exact form is substituted: any other `${{ }}`
# text is left as written, and shell `${VAR}` never matches.
MATRIX_REFERENCE = re.compile(r"\$\{\{\s*matrix\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}")


def product_size(axes: Mapping[str, Sequence[Any]]) -> int:
    """How many base combinations the axes produce, before exclude and include."""
    return math.prod(len(values) for values in axes.values()) if axes else 0


def expand_matrix(
    axes: Mapping[str, Sequence[Any]],
    include: Sequence[Mapping[str, Any]] = (),
    exclude: Sequence[Mapping[str, Any]] = (),
) -> list[Combination]:
    """All combinations, base ones first (product order), then include-only ones.

    Each combination's keys follow `key_order(axes, include)`.
    """
    order = key_order(axes, include)
    names = list(axes)
    base: list[Combination] = []
    if names:
        for values in itertools.product(*(axes[name] for name in names)):
            combination = dict(zip(names, values, strict=True))
            if not any(_matches(combination, entry) for entry in exclude):
                base.append(combination)
    added: list[Combination] = []
    for entry in include:
        merged = False
        for combination in base:
            if all(combination[k] == v for k, v in entry.items() if k in axes):
                combination.update(entry)
                merged = True
        if not merged:
            added.append(dict(entry))
    return [_ordered(combination, order) for combination in base + added]


def key_order(
    axes: Mapping[str, Sequence[Any]], include: Sequence[Mapping[str, Any]] = ()
) -> list[str]:
    """Axis keys in matrix order, then include-only keys in order of first appearance."""
    order = list(axes)
    for entry in include:
        order.extend(key for key in entry if key not in order)
    return order


def value_text(value: Any) -> str:
    """A matrix value in a name or a template: strings as they are, lists and mappings as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def combination_name(job_key: str, combination: Mapping[str, Any]) -> str:
    """GitHub's name for a matrix job: `test (3.11, ubuntu)`."""
    return f"{job_key} ({', '.join(value_text(v) for v in combination.values())})"


def substitute(text: str, combination: Mapping[str, Any]) -> str:
    """Replace `${{ matrix.<key> }}`; a key this combination lacks becomes "" (as on GitHub)."""
    return MATRIX_REFERENCE.sub(lambda m: value_text(combination.get(m.group(1), "")), text)


def references(text: str) -> list[str]:
    """The matrix keys `text` refers to, in order of appearance."""
    return MATRIX_REFERENCE.findall(text)


def _matches(combination: Mapping[str, Any], entry: Mapping[str, Any]) -> bool:
    return all(combination.get(k) == v for k, v in entry.items())


def _ordered(combination: Combination, order: Sequence[str]) -> Combination:
    return {key: combination[key] for key in order if key in combination}
