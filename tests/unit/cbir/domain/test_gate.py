import pytest

from cbir.domain.gate import (
    COLLECTION,
    TrainedOn,
    Verdict,
    gate,
    pooled_average_precision,
    skipped,
)


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


def test_a_verdict_passes_only_if_every_check_does_and_names_the_refusal() -> None:
    probe = gate("mAP@10", 0.95, 80, 0.90, 0.02)
    collection = gate("verified mAP@10", 0.70, 120, 0.80, 0.03, COLLECTION, "on 120 images")
    verdict = Verdict((probe, collection))
    assert probe.passed and not verdict.passed
    assert verdict.refusals().startswith("the collection check refused: verified mAP@10 on 120")
    assert Verdict.from_json(verdict.as_json()) == verdict
    assert verdict.summary() == "mAP@10 0.9500 passed; verified mAP@10 0.7000 refused"
    unjudged = skipped(COLLECTION, "verified mAP@10", 0.03, "local features are off")
    assert Verdict((probe, unjudged)).passed and unjudged.summary() == "collection: skipped"


def test_a_record_from_before_several_checks_reads_as_one_probe_check() -> None:
    old = gate("mAP@10", 0.8, 40, 0.7, 0.02).as_json()
    del old["check"]
    (only,) = Verdict.from_json(old).checks
    assert only.check == "probe" and only.value == 0.8


def test_pooled_average_precision_judges_against_the_pool() -> None:
    assert pooled_average_precision(["a", "x", "b"], {"a", "b"}, 3) == (1 + 2 / 3) / 2
    assert pooled_average_precision(["x", "y"], {"a"}, 2) == 0.0
    with pytest.raises(ValueError):
        pooled_average_precision(["a"], set(), 1)
