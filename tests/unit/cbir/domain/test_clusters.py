"""Near-duplicate clusters from pairwise links."""

from __future__ import annotations

from cbir.domain.clusters import clusters


def test_links_make_clusters_largest_first() -> None:
    links = [("c", "d"), ("a", "b"), ("b", "e"), ("e", "a"), ("x", "x")]
    assert clusters(links) == [["a", "b", "e"], ["c", "d"], ["x"]]
    assert clusters([]) == []
