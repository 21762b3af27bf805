"""Training on a small synthetic fixture: the held-out mAP rises, a killed run resumes to
the same head as an uninterrupted one, the head exports as numpy computes it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cbir.evaluation.metrics import leave_one_out
from cbir.training.splits import split
from cbir.training.trainer import Epoch, TrainingError, TrainOptions, batches, embed_with, train


def fixture(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """8 classes x 24 items in 48-d: the class signal lives in 8 dimensions, a larger random
    nuisance in the other 40, so the frozen ranking is poor and a linear head can mend it."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(8), 24)
    centres = rng.normal(size=(8, 8))
    signal = centres[labels] + 0.3 * rng.normal(size=(len(labels), 8))
    nuisance = 1.5 * rng.normal(size=(len(labels), 40))
    features = np.hstack([signal, nuisance])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features.astype(np.float32), labels


OPTIONS = TrainOptions(epochs=15, dim=16, classes_per_batch=4, per_class=4, lr=1e-2)


def test_training_raises_the_held_out_map() -> None:
    features, labels = fixture()
    fit, held = split(labels, "same-classes", seed=0)
    frozen = leave_one_out(features[held], labels[held]).mean_average_precision
    for options in (OPTIONS, replace(OPTIONS, loss="contrastive", memory=64, koleo=0.05)):
        trained = train(features[fit], labels[fit], options, (features[held], labels[held]))
        after = leave_one_out(embed_with(trained.head, features[held]), labels[held])
        assert after.mean_average_precision > frozen + 0.25, (options.loss, frozen, after)
        assert len(trained.history) == options.epochs
        assert trained.history[-1].validation_map == pytest.approx(
            after.mean_average_precision, abs=1e-4
        )


def test_a_killed_run_resumes_to_the_same_head(tmp_path: Path) -> None:
    features, labels = fixture()
    checkpoint = tmp_path / "run.pt"

    def killed_at_epoch_3(epoch: Epoch) -> None:
        if epoch.epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(features, labels, OPTIONS, checkpoint=checkpoint, on_epoch=killed_at_epoch_3)
    resumed = train(features, labels, OPTIONS, checkpoint=checkpoint)
    whole = train(features, labels, OPTIONS)
    assert resumed.resumed_from == 2  # epoch 3 was not saved: it never finished
    assert [e.epoch for e in resumed.history] == list(range(1, OPTIONS.epochs + 1))
    for got, want in zip(resumed.head.weights, whole.head.weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_other_options_is_refused(tmp_path: Path) -> None:
    features, labels = fixture()
    checkpoint = tmp_path / "run.pt"
    train(features, labels, replace(OPTIONS, epochs=1), checkpoint=checkpoint)
    with pytest.raises(TrainingError, match="delete it"):
        train(features, labels, replace(OPTIONS, epochs=1, margin=0.5), checkpoint=checkpoint)


def test_the_same_seed_gives_the_same_head() -> None:
    features, labels = fixture()
    first = train(features, labels, replace(OPTIONS, epochs=2))
    second = train(features, labels, replace(OPTIONS, epochs=2))
    assert all(
        np.array_equal(a, b) for a, b in zip(first.head.weights, second.head.weights, strict=True)
    )


def test_batches_hold_p_classes_of_k_images() -> None:
    _, labels = fixture()
    rng = np.random.default_rng(0)
    epoch = batches(labels, OPTIONS, rng)
    assert sum(len(b) for b in epoch) >= len(labels)
    for batch in epoch:
        counts = np.bincount(labels[batch])
        assert sorted(c for c in counts if c) == [4, 4, 4, 4]


def test_a_single_class_or_no_positive_is_a_clear_error() -> None:
    features, _ = fixture()
    with pytest.raises(TrainingError, match="two classes"):
        train(features, np.zeros(len(features), dtype=int), OPTIONS)
    with pytest.raises(TrainingError, match="per-class"):
        train(features, np.arange(len(features)) % 8, replace(OPTIONS, per_class=1))


def test_the_splits_are_disjoint_and_follow_the_protocol() -> None:
    _, labels = fixture()
    fit, held = split(labels, "class-disjoint", seed=1)
    assert not set(labels[fit]) & set(labels[held]) and len(set(labels[fit])) == 4
    fit, held = split(labels, "same-classes", seed=1)
    assert not set(fit) & set(held)
    assert set(labels[fit]) == set(labels[held]) == set(range(8))
