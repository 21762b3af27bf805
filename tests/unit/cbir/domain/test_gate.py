from cbir.domain.gate import gate


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
