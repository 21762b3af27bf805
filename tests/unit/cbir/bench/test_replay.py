"""The replay benchmark's CPU line: each process's CPU per embedding and the rate it allows."""

from __future__ import annotations

from cbir.bench.replay import cpu_line


def test_the_cpu_line_names_each_process_and_the_rate_the_total_allows() -> None:
    line = cpu_line("synthetic-50000", "reindex", {"milvus": 600, "replay": 150, "redis": 0}, 2)
    assert "milvus 600, replay 150;" in line and "redis" not in line  # idle ones left out
    assert line.endswith("total 750: at most 2667 embeddings/s on 2 cores")
