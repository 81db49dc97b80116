"""The DAG rules without a database: cycles, topological order, descendants."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_server.services import dag


def test_no_cycle_in_a_diamond() -> None:
    assert dag.find_cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) is None


def test_self_dependency_is_a_cycle() -> None:
    assert dag.find_cycle({"a": ["a"]}) == ["a", "a"]


def test_cycle_is_named_as_a_path() -> None:
    cycle = dag.find_cycle({"a": ["c"], "b": ["a"], "c": ["b"], "x": []})
    assert cycle is not None
    assert cycle[0] == cycle[-1] and len(cycle) == 4
    assert set(cycle) == {"a", "b", "c"}


def test_topological_order_breaks_ties_by_order_index_then_id() -> None:
    graph = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "z": []}
    order = dag.topological_order(graph, {"a": 5, "b": 2, "c": 1, "d": 0, "z": 0})
    assert order == ["z", "a", "c", "b", "d"]


def test_topological_order_refuses_a_cycle() -> None:
    with pytest.raises(ValueError, match="cycle"):
        dag.topological_order({"a": ["b"], "b": ["a"]}, {})


def test_descendants_are_transitive_and_exclude_the_root() -> None:
    graph = {"a": [], "b": ["a"], "c": ["b"], "d": [], "e": ["c", "d"]}
    assert set(dag.descendants(graph, ["a"])) == {"b", "c", "e"}
    assert dag.descendants(graph, ["e"]) == []
    assert dag.ancestors(graph, "e") == {"a", "b", "c", "d"}


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(1, 12))
    names = [f"p{i}" for i in range(size)]
    return {names[i]: sorted(draw(st.sets(st.sampled_from(names[:i]), max_size=4))) if i else [] for i in range(size)}


@given(dags(), st.data())
def test_random_dags_sort_dependencies_first(graph: dict[str, list[str]], data: st.DataObject) -> None:
    assert dag.find_cycle(graph) is None
    order_index = {name: data.draw(st.integers(-3, 3)) for name in graph}
    order = dag.topological_order(graph, order_index)
    position = {name: i for i, name in enumerate(order)}
    assert sorted(order) == sorted(graph)
    for node, deps in graph.items():
        for dep in deps:
            assert position[dep] < position[node]


@given(dags(), st.data())
def test_adding_a_back_edge_always_reports_a_real_cycle(graph: dict[str, list[str]], data: st.DataObject) -> None:
    names = sorted(graph)
    low = data.draw(st.sampled_from(names))
    ancestors_of_low = dag.descendants(graph, [low])
    if not ancestors_of_low:
        return
    high = data.draw(st.sampled_from(ancestors_of_low))
    graph = {**graph, low: [*graph[low], high]}  # low depends on a node that depends on low
    cycle = dag.find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    for node, nxt in zip(cycle, cycle[1:], strict=False):
        assert nxt in graph[node]
