"""The training benchmark's own logic: the category-prediction accuracy and its table."""

from __future__ import annotations

import numpy as np

from cbir.bench.training import category_accuracy, markdown


def test_category_accuracy_counts_the_vote_of_the_nearest_others() -> None:
    # two tight clusters, and one point of class 0 sitting inside class 1's cluster
    features = np.array(
        [[1, 0], [0.99, 0.14], [0.98, 0.2], [0, 1], [0.14, 0.99], [0.2, 0.98], [0.1, 0.995]],
        dtype=np.float32,
    )
    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    accuracy = category_accuracy(features, labels, ["a", "b"], k=2)
    # the stray point (6) is nearest to 3 and 4, which it outvotes (0.995 > 0.99 for 3;
    # 0.999 > 0.998 for 4), while 4 and 3 outvote it: 0, 1, 2 and 5 are right; only 6 has
    # its own class nowhere among the labels voted
    assert accuracy == {"images": 7, "top1": round(4 / 7, 4), "top3": round(6 / 7, 4)}


def test_the_table_has_a_row_per_record_and_the_category_figures() -> None:
    record = {
        "dataset": "flowers17", "protocol": "same-classes", "variant": "frozen",
        "mAP": 0.55, "mAP_vs_frozen": 1.0, "P@1": 0.86, "P@10": 0.77, "NDCG@10": 0.79,
        "cpu_s": 0.0, "training": "none",
    }  # fmt: skip
    document = {
        "date": "2026-12-02T00:00:00Z", "command": "cbir bench training", "commit": "abc",
        "machine": {"cpu": "x", "cores": 2}, "targets": {"same-classes": "mAP >= 0.80"},
        "records": [record],
        "category_prediction": [{"dataset": "flowers17", "images": 1360, "k": 10,
                                 "top1": 0.9125, "top3": 0.986}],
    }  # fmt: skip
    table = markdown(document)
    assert "| flowers17 | same-classes | frozen | 0.5500 | 1.000 |" in table
    assert "| flowers17 | 1360 | 10 | 0.9125 | 0.9860 |" in table
