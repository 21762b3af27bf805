import numpy as np

from cbir.training.whitening import learned_whitening


def test_learned_whitening_makes_the_within_class_spread_isotropic() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 50)
    scales = np.array([5.0, 1.0, 0.2, 0.2])  # the within-class spread, far from isotropic
    features = rng.normal(size=(6, 4))[labels] * 3 + rng.normal(size=(300, 4)) * scales
    weight, bias = learned_whitening(features, labels, dim=4, shrinkage=0.0)
    projected = features @ weight.T + bias
    within = np.concatenate(
        [projected[labels == c] - projected[labels == c].mean(0) for c in range(6)]
    )
    spread = np.cov(within.T)
    np.testing.assert_allclose(spread, np.eye(4), atol=0.05)
    np.testing.assert_allclose(projected.mean(0), 0, atol=1e-4)


def test_the_same_data_gives_the_same_bytes() -> None:
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(60, 5)), np.repeat(np.arange(3), 20)
    first, second = learned_whitening(features, labels, 3), learned_whitening(features, labels, 3)
    assert first[0].tobytes() == second[0].tobytes() and first[0].shape == (3, 5)


def test_the_shrinkage_is_chosen_on_the_training_classes_alone() -> None:
    from cbir.training.whitening import choose_shrinkage

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(8), 12)
    # a within-class spread far from isotropic in the same directions for every class: the
    # unshrunk whitening (0.3) carries over to new classes; a large shrinkage keeps it
    features = rng.normal(size=(8, 6))[labels] + rng.normal(size=(96, 6)) * [
        4,
        4,
        0.1,
        0.1,
        0.1,
        0.1,
    ]
    chosen = choose_shrinkage(features, labels, dim=6, candidates=(0.3, 100.0), folds=2)
    assert chosen == 0.3
