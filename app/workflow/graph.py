"""The job graph (`needs` edges): order, cycles, ancestors and readiness, in linear time.

Shared by the parser (validation: cycles, topological order of the YAML job ids) and the executor
(which jobs can start, which ancestors decide `success()`), so both walk the graph the same way.
Every function is O(jobs + edges): a hostile workflow with thousands of jobs is rejected by the
job limit, but validation must not be quadratic before it gets there.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

Needs = Mapping[str, Sequence[str]]  # node -> the nodes it needs (all must be keys)


@dataclass(frozen=True)
class Order:
    """A topological order and, when the graph is not acyclic, the loops that prevent one."""

    order: list[str]  # nodes in a topological order; nodes on or behind a cycle are missing
    cycles: list[list[str]]  # one shortest loop [a, b, ..., a] per strongly connected component


def topological_order(nodes: Sequence[str], needs: Needs) -> Order:
    """Kahn's algorithm; among ready nodes the one listed first in `nodes` comes first."""
    position = {node: i for i, node in enumerate(nodes)}
    waiting = {node: len(needs[node]) for node in nodes}
    dependents: dict[str, list[str]] = {node: [] for node in nodes}
    for node in nodes:
        for need in needs[node]:
            dependents[need].append(node)
    ready = [position[node] for node in nodes if waiting[node] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for dependent in dependents[node]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    cycles = find_cycles(nodes, needs) if len(order) < len(nodes) else []
    return Order(order, cycles)


def find_cycles(nodes: Sequence[str], needs: Needs) -> list[list[str]]:
    """One loop per cyclic strongly connected component, named from its first node in `nodes`.

    Tarjan's algorithm (iterative: a 10,000-job chain must not hit the recursion limit) finds the
    components; a breadth-first search inside each names a shortest loop through its first node.
    Self-loops are components of one node with an edge to itself.
    """
    components = _strong_components(nodes, needs)
    position = {node: i for i, node in enumerate(nodes)}
    loops: list[list[str]] = []
    for component in components:
        first = min(component, key=position.__getitem__)
        if len(component) == 1 and first not in needs[first]:
            continue
        loops.append(_shortest_loop(first, needs, set(component)))
    loops.sort(key=lambda loop: position[loop[0]])
    return loops


def _strong_components(nodes: Sequence[str], needs: Needs) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]  # (node, next edge to visit)
        while work:
            node, edge = work.pop()
            if edge == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            edges = needs[node]
            if edge < len(edges):
                work.append((node, edge + 1))
                nxt = edges[edge]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _shortest_loop(start: str, needs: Needs, component: set[str]) -> list[str]:
    """[start, ..., start] following needs, breadth-first so the loop named is a shortest one."""
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for need in needs[node]:
            if need == start:
                path = [node]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return [*reversed(path), start]
            if need in component and need not in parents:
                parents[need] = node
                queue.append(need)
    raise AssertionError(f"{start!r} is not on a cycle")  # pragma: no cover


def ancestors(order: Sequence[str], needs: Needs) -> dict[str, frozenset[str]]:
    """Every node's transitive needs, computed once along a topological order."""
    result: dict[str, frozenset[str]] = {}
    for node in order:
        acc: set[str] = set()
        for need in needs[node]:
            acc.add(need)
            acc |= result[need]
        result[node] = frozenset(acc)
    return result


def ready(
    order: Sequence[str],
    needs: Needs,
    is_pending: Callable[[str], bool],
    is_finished: Callable[[str], bool],
) -> Iterator[str]:
    """Pending nodes, in order, all of whose needs have finished.

    Lazy on purpose: each node is checked when reached, so a caller that decides a node while
    iterating (skips it, say) has its dependents considered in the same pass."""
    for node in order:
        if is_pending(node) and all(is_finished(need) for need in needs[node]):
            yield node
