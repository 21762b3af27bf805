"""Model ids as a value type, and the lifecycle of a generation."""

from __future__ import annotations

import pytest

from cbir.domain.errors import InvalidValue, Permanent
from cbir.domain.generations import GenerationState, embeddings_topic_of
from cbir.domain.models import ModelId

TEXT = "mobilenet:1:1024d:gap:0123456789abcdef"


def test_a_model_id_parses_formats_back_and_names_its_triton_model() -> None:
    model = ModelId.parse(TEXT)
    assert (model.name, model.version, model.dim, model.pooling) == ("mobilenet", "1", 1024, "gap")
    assert str(model) == TEXT
    assert model.triton_model == "mobilenet"
    assert model.slug == "mobilenet_v1_01234567"


@pytest.mark.parametrize(
    "text", ["mobilenet", "a:1:x:gap:f", "a:1:8:gap:f", "a:1:8d:gap:", "a:b:8d:d:e:f"]
)
def test_what_is_not_a_model_id_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(InvalidValue, match="name:version:<dim>d:pooling:fingerprint") as refused:
        ModelId.parse(text)
    assert isinstance(refused.value, Permanent)


def test_a_re_embeds_topic_is_named_after_the_model() -> None:
    assert embeddings_topic_of("cbir.embeddings", TEXT) == "cbir.embeddings.mobilenet_v1_01234567"


def test_generations_move_only_forward_through_their_lifecycle() -> None:
    building, live = GenerationState.BUILDING, GenerationState.LIVE
    retired = GenerationState.RETIRED
    assert building.can_become(live) and building.can_become(GenerationState.ABANDONED)
    assert live.can_become(retired) and retired.can_become(GenerationState.DROPPED)
    assert not live.can_become(building) and not retired.can_become(live)
    assert not GenerationState.DROPPED.can_become(live)
    with pytest.raises(InvalidValue, match="a retired generation cannot become live"):
        retired.check_move(live)
    assert {s for s in GenerationState if s.written} == {building, live}
    assert {s for s in GenerationState if s.holds_topic} == {building, live, retired}
