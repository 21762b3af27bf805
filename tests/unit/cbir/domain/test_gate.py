from cbir.domain.gate import TrainedOn, gate


def test_a_candidate_within_the_tolerance_passes() -> None:
    verdict = gate("mAP@10", 0.79, 40, 0.80, 0.02)
    assert verdict.passed and "passes" in verdict.detail


def test_a_candidate_worse_than_live_by_more_than_the_tolerance_is_refused() -> None:
    verdict = gate("mAP@10", 0.70, 40, 0.80, 0.02)
    assert not verdict.passed
    assert "0.7000" in verdict.detail and "0.7800 needed" in verdict.detail


def test_with_nothing_live_any_candidate_passes_and_is_recorded() -> None:
    verdict = gate("mAP@10", 0.10, 40, None, 0.02)
    assert verdict.passed and verdict.as_json()["value"] == 0.10


def test_what_a_model_was_trained_on_survives_its_json_and_says_itself() -> None:
    trained = TrainedOn("flowers17", tuple("abcdefg"), frozenset({"x", "y"}), held_out=3)
    assert TrainedOn.from_json(trained.as_json()) == trained
    assert trained.describe() == (
        "2 images of flowers17 in 7 classes (a, b, c, d, e, ...); 3 held out for validation"
    )
