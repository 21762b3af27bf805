import pytest

from cbir.domain.categories import predict_labels


def test_the_class_of_most_similar_neighbours_comes_first() -> None:
    neighbours = [(["rose"], 0.9), (["tulip"], 0.8), (["rose"], 0.7), (["rose"], 0.6)]
    first, second = predict_labels(neighbours)
    assert (first.label, second.label) == ("rose", "tulip")
    assert first.confidence == pytest.approx(2.2 / 3.0, abs=1e-4)
    assert (first.neighbours, second.neighbours) == (3, 1)


def test_a_near_neighbour_outweighs_several_far_ones() -> None:
    neighbours = [(["daisy"], 0.95), (["iris"], 0.3), (["iris"], 0.3)]
    assert predict_labels(neighbours)[0].label == "daisy"


def test_untagged_neighbours_lower_the_confidence() -> None:
    (only,) = predict_labels([(["rose"], 0.5), ([], 0.5)])
    assert only.confidence == pytest.approx(0.5)


def test_an_image_with_several_tags_shares_its_weight() -> None:
    predictions = predict_labels([(["rose", "red"], 1.0)])
    assert [(p.label, p.confidence) for p in predictions] == [("rose", 0.5), ("red", 0.5)]


def test_nothing_to_vote_with_predicts_nothing() -> None:
    assert predict_labels([]) == []
    assert predict_labels([(["rose"], -0.2)]) == []
