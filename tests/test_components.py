"""Connected components in Spark against a pure-Python search on random graphs."""

from __future__ import annotations

import random

import pytest

from lakecurate.curation.dedup.components import connected_components


def reference_components(edges: list[tuple[str, str]]) -> dict[str, str]:
    """Breadth-first search over an adjacency dict: node -> smallest node it reaches."""
    adj: dict[str, set[str]] = {}
    for a, b in edges:
        if a != b:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
    out: dict[str, str] = {}
    for start in adj:
        if start in out:
            continue
        seen, frontier = {start}, [start]
        while frontier:
            frontier = [n for x in frontier for n in adj[x] if n not in seen]
            seen.update(frontier)
        root = min(seen)
        out.update({n: root for n in seen})
    return out


def random_graph(seed: int, nodes: int, edges: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    names = [f"{rng.getrandbits(40):010x}" for _ in range(nodes)]
    out = [(rng.choice(names), rng.choice(names)) for _ in range(edges)]
    # a long path and a star: the shapes that need the most rounds
    path = sorted(names[:30], reverse=True)
    out += list(zip(path, path[1:], strict=False))
    out += [(names[40], n) for n in names[41:60]]
    return out


def components_of(spark, edges: list[tuple[str, str]], local_limit: int = 0) -> dict[str, str]:
    df = spark.createDataFrame(edges, "src string, dst string")
    out = connected_components(df, local_limit=local_limit)
    return {r["node"]: r["root"] for r in out.collect()}


@pytest.mark.parametrize(
    "seed,nodes,edges,local_limit",
    [(1, 300, 400, 0), (3, 300, 400, 150), (4, 60, 10, 100_000)],
)
def test_components_match_union_find(spark, seed, nodes, edges, local_limit):
    """All in Spark (limit 0), Spark then driver finish, and driver only."""
    graph = random_graph(seed, nodes, edges)
    expected = reference_components(graph)
    got = components_of(spark, graph, local_limit)
    assert got == expected
    # the root is the smallest member of its component
    for node, root in got.items():
        assert root <= node


def test_self_loops_and_duplicate_edges(spark):
    got = components_of(spark, [("b", "b"), ("c", "a"), ("a", "c"), ("d", "c"), ("x", "y")])
    assert got == {"a": "a", "c": "a", "d": "a", "x": "x", "y": "x"}


def test_no_edges_gives_no_components(spark):
    assert components_of(spark, [("a", "a")]) == {}
