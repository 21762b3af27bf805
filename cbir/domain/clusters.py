"""Clusters of near-duplicates from pairwise links (union-find). Pure."""

from __future__ import annotations

from collections.abc import Iterable


def clusters(links: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Connected groups of the linked ids, each sorted, largest first (then by first id)."""
    parent: dict[str, str] = {}

    def root(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for item in parent:
        groups.setdefault(root(item), []).append(item)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))
