"""The evaluation protocols of trained descriptors, on frozen features of a labelled set.

- class-disjoint: train on half of the classes, evaluate on the other half (new products a
  model has never seen);
- same-classes: train on half of each class's images, evaluate on the rest.

Evaluation is leave-one-out over the evaluation images (each queries all the others,
exhaustive cosine), the same for the frozen features and for every trained variant, so their
figures compare directly. The split is seeded; the figures are of the last epoch (no epoch is
chosen on the evaluation images).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from cbir.evaluation.metrics import evaluate, exhaustive_rankings, judge
from cbir.training.splits import SplitProtocol, split
from cbir.training.trainer import Epoch, TrainOptions, embed_with, train


@dataclass(frozen=True)
class Variant:
    """A row of the table: a name, and the training (None: the frozen features)."""

    name: str
    options: TrainOptions | None


def variants(epochs: int, seed: int = 0) -> list[Variant]:
    """The frozen features and the design's losses, each with the choice it is about."""
    base = TrainOptions(epochs=epochs, seed=seed)
    contrastive = replace(base, loss="contrastive", memory=0)
    return [
        Variant("frozen", None),
        Variant("triplet, per-query mean", base),
        Variant("triplet, plain mean", replace(base, reduction="plain")),
        Variant("triplet, batch-hard", replace(base, mining="batch-hard")),
        Variant("contrastive, no memory", contrastive),
        Variant("contrastive + memory", replace(contrastive, memory=1024)),
        Variant("contrastive + memory + KoLeo", replace(contrastive, memory=1024, koleo=0.1)),
        # the shrinkage chosen on class splits of the training data (never the evaluation's)
        Variant(
            "learned whitening",
            replace(base, init="whitening", dim=512, shrinkage=None, epochs=0),
        ),
        Variant(
            "learned whitening + triplet",
            replace(base, init="whitening", dim=512, shrinkage=None, margin=0.1),
        ),
    ]


def quality(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    rankings = exhaustive_rankings(embeddings)
    relevant, totals = judge(rankings, labels, np.arange(len(labels)))
    report = evaluate(relevant, totals, (1, 10))
    return {
        "mAP": round(report.mean_average_precision, 4),
        "P@1": round(report.precision_at[1], 4),
        "P@10": round(report.precision_at[10], 4),
        "NDCG@10": round(report.ndcg_at[10], 4),
    }


def run_protocol(
    features: np.ndarray,
    labels: np.ndarray,
    protocol: SplitProtocol,
    chosen: Sequence[Variant],
    seed: int = 0,
    on_epoch: Callable[[str, Epoch], None] = lambda _v, _e: None,
    validation_sample: int = 1500,
) -> list[dict[str, Any]]:
    """One record per variant: the split's sizes, the figures, the time and the history.
    The per-epoch validation mAP (the curve) is measured on at most `validation_sample` of
    the evaluation images, the final figures on all of them."""
    fit, held = split(labels, protocol, seed)
    frozen = quality(features[held], labels[held])
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.permutation(held)[:validation_sample])
    records = []
    for variant in chosen:
        started = time.process_time()
        history: list[Epoch] = []
        picked: dict[str, Any] = {}
        if variant.options is None:
            figures = frozen
        else:
            trained = train(
                features[fit],
                labels[fit],
                variant.options,
                validation=(features[sample], labels[sample]),
                on_epoch=partial(on_epoch, variant.name),
            )
            history, picked = trained.history, trained.chosen
            figures = quality(embed_with(trained.head, features[held]), labels[held])
        records.append(
            {
                "protocol": protocol,
                "variant": variant.name,
                "training": variant.options.describe() if variant.options else "none",
                "options": asdict(variant.options) if variant.options else None,
                "train_images": len(fit),
                "eval_images": len(held),
                "validation_images": len(sample),
                **figures,
                "mAP_vs_frozen": round(figures["mAP"] / frozen["mAP"], 3),
                "chosen": picked,
                "cpu_s": round(time.process_time() - started, 1),
                "history": [asdict(e) for e in history],
            }
        )
    return records
