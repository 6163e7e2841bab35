"""app/workflow/graph.py: order, cycles, ancestors, readiness."""

from __future__ import annotations

from app.workflow import graph


def test_order_prefers_listed_position_among_ready_nodes() -> None:
    needs = {"c": [], "a": ["c"], "b": [], "d": ["a", "b"]}
    result = graph.topological_order(["c", "a", "b", "d"], needs)
    assert result.order == ["c", "a", "b", "d"]
    assert result.cycles == []


def test_cycles_are_named_from_their_first_node_shortest_loop() -> None:
    nodes = ["up", "a", "b", "c", "down", "x", "y"]
    needs = {
        "up": [],
        "a": ["up", "c", "b"],
        "b": ["a"],
        "c": ["b"],
        "down": ["a"],
        "x": ["y"],
        "y": ["x"],
    }
    result = graph.topological_order(nodes, needs)
    assert result.order == ["up"]
    assert result.cycles == [["a", "b", "a"], ["x", "y", "x"]]


def test_long_chain_cycle_is_found_without_recursion() -> None:
    n = 20_000
    nodes = [f"j{i}" for i in range(n)]
    needs = {f"j{i}": [f"j{(i + 1) % n}"] for i in range(n)}
    cycles = graph.find_cycles(nodes, needs)
    assert len(cycles) == 1
    assert cycles[0][0] == "j0"
    assert len(cycles[0]) == n + 1


def test_ancestors_are_transitive() -> None:
    needs = {"a": [], "b": ["a"], "c": ["b"], "d": []}
    assert graph.ancestors(["a", "b", "c", "d"], needs) == {
        "a": frozenset(),
        "b": frozenset({"a"}),
        "c": frozenset({"a", "b"}),
        "d": frozenset(),
    }


def test_ready_is_lazy_so_decisions_made_while_iterating_count() -> None:
    needs = {"a": [], "b": ["a"], "c": ["b"]}
    status = {"a": "pending", "b": "pending", "c": "pending"}
    seen = []
    for node in graph.ready(
        ["a", "b", "c"], needs, lambda n: status[n] == "pending", lambda n: status[n] == "skipped"
    ):
        seen.append(node)
        status[node] = "skipped"
    assert seen == ["a", "b", "c"]
