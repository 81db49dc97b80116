"""The pipeline as a DAG: cycle detection, topological order, descendants (pure)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

Graph = Mapping[str, Sequence[str]]  # process id -> the ids it depends on


def find_cycle(graph: Graph) -> list[str] | None:
    """A dependency cycle as a path that ends where it starts (``a -> b -> a``), or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in sorted(graph):
        if colour[start] != white:
            continue
        path: list[str] = [start]
        colour[start] = grey
        iterators = [iter(sorted(graph.get(start, ())))]
        while iterators:
            advanced = False
            for dep in iterators[-1]:
                state = colour.get(dep, black)  # unknown ids cannot close a cycle
                if state == grey:
                    return [*path[path.index(dep) :], dep]
                if state == white:
                    colour[dep] = grey
                    path.append(dep)
                    iterators.append(iter(sorted(graph.get(dep, ()))))
                    advanced = True
                    break
            if not advanced:
                colour[path.pop()] = black
                iterators.pop()
    return None


def topological_order(graph: Graph, order_index: Mapping[str, int]) -> list[str]:
    """Dependencies before dependents; among those ready at once, lower order_index then id first."""
    remaining = {node: sum(1 for d in deps if d in graph) for node, deps in graph.items()}
    dependents = dependents_of(graph)
    heap = [(order_index.get(node, 0), node) for node, count in remaining.items() if count == 0]
    heapq.heapify(heap)
    ordered: list[str] = []
    while heap:
        _, node = heapq.heappop(heap)
        ordered.append(node)
        for child in dependents.get(node, ()):
            remaining[child] -= 1
            if remaining[child] == 0:
                heapq.heappush(heap, (order_index.get(child, 0), child))
    if len(ordered) != len(graph):
        raise ValueError(f"the pipeline has a cycle: {' -> '.join(find_cycle(graph) or [])}")
    return ordered


def dependents_of(graph: Graph) -> dict[str, list[str]]:
    """Reverse edges: process id -> the ids that depend on it directly."""
    reverse: dict[str, list[str]] = {node: [] for node in graph}
    for node, deps in graph.items():
        for dep in deps:
            reverse.setdefault(dep, []).append(node)
    for children in reverse.values():
        children.sort()
    return reverse


def descendants(graph: Graph, roots: Iterable[str], *, reverse: Mapping[str, list[str]] | None = None) -> list[str]:
    """Every transitive dependent of the roots (the roots excluded), breadth first; ``reverse``: the graph's
    dependents_of, when the caller keeps it."""
    if reverse is None:
        reverse = dependents_of(graph)
    seen: set[str] = set(roots)
    queue = deque(seen)
    found: list[str] = []
    while queue:
        node = queue.popleft()
        for child in reverse.get(node, ()):
            if child not in seen:
                seen.add(child)
                found.append(child)
                queue.append(child)
    return found


def ancestors(graph: Graph, node: str) -> set[str]:
    """Every transitive dependency of a node."""
    seen: set[str] = set()
    stack = list(graph.get(node, ()))
    while stack:
        dep = stack.pop()
        if dep not in seen:
            seen.add(dep)
            stack.extend(graph.get(dep, ()))
    return seen
