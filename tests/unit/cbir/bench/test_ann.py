"""The ANN table's comparison of the synthetic and the real set."""

from __future__ import annotations

from typing import Any

from cbir.bench.ann import comparison_markdown


def _document(size: int, dim: int, recalls: dict[tuple[str, int], float]) -> dict[str, Any]:
    records = [
        {"index": index, "param": "L", "value": value, "recall_at_10": recall}
        for (index, value), recall in recalls.items()
    ]
    return {"vectors": {"size": size, "dim": dim}, "records": records}


def test_both_sets_side_by_side_with_the_published_figure_at_l_10() -> None:
    synthetic = _document(
        100_000, 2048, {("DiskANN (diskannpy)", 10): 0.48, ("Milvus HNSW", 10): 0.99}
    )
    real = _document(
        100_000,
        1024,
        {
            ("DiskANN (diskannpy)", 10): 0.71,
            ("DiskANN (diskannpy)", 20): 0.9,
            ("Milvus HNSW", 10): 0.97,
        },
    )
    table = comparison_markdown(synthetic, real)
    assert "| DiskANN, synthetic 100K x 2048 | DiskANN, real 100K x 1024 |" in table
    assert "| 10 | >= 0.9 | 0.48 | 0.71 | 0.99 | 0.97 |" in table
    assert "| 20 |  |  | 0.9 |  |  |" in table
