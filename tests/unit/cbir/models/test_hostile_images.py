"""Every kind of the hostile corpus, through the two gates that judge bytes: the API's
header check and the embedding runtime. Each is embedded or refused with its own reason;
nothing raises anything else."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbir.models.runtime import ImageRejected, decode_image
from query_api.uploads import UploadError, inspect_image
from tests.hostile_images import Hostile, hostile_corpus

LIMIT_BYTES, LIMIT_PIXELS = 20 * 1024 * 1024, 40_000_000


@pytest.fixture(scope="module")
def corpus(flower_photos: list[Path]) -> list[Hostile]:
    return hostile_corpus(flower_photos[0])


def test_the_corpus_has_forty_distinct_kinds(corpus: list[Hostile]) -> None:
    assert len(corpus) >= 40
    assert len({h.data for h in corpus}) == len(corpus)  # distinct images, distinct ids


def test_each_kind_is_embedded_or_refused_with_a_reason_of_its_own(corpus: list[Hostile]) -> None:
    wrong = []
    for hostile in corpus:
        try:
            image = decode_image(hostile.data, 224)
            outcome, reason = "embed", ""
            assert image.mode == "RGB" and min(image.size) >= 1
        except ImageRejected as exc:
            outcome, reason = "reject", str(exc)
        if outcome != hostile.verdict or hostile.reason not in reason:
            wrong.append(f"{hostile.kind}: {outcome} ({reason})")
    assert not wrong, wrong


def test_the_api_gate_refuses_with_a_status_or_lets_the_pipeline_judge(
    corpus: list[Hostile],
) -> None:
    for hostile in corpus:
        try:
            inspect_image(hostile.data, LIMIT_BYTES, LIMIT_PIXELS)
        except UploadError as exc:
            # what the gate refuses, the runtime refuses too: no image is lost at the door
            assert hostile.verdict == "reject", hostile.kind
            assert exc.status in (400, 413, 415) and len(str(exc)) > 20, hostile.kind
