"""The fuzz test's hook drops only requests that are valid as sent: judged against the API's
own spec, built here without servers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from cbir.settings import Settings
from query_api.app import create_app
from tests.schemathesis_hooks import query_array_schemas, valid_on_the_wire

BASE = "http://127.0.0.1:18080/images/" + "ab" * 32 + "/similar"


@pytest.fixture(scope="module")
def similar_parameters() -> list[dict[str, Any]]:
    spec = create_app(Settings()).openapi()
    parameters: list[dict[str, Any]] = spec["paths"]["/images/{image_id}/similar"]["get"][
        "parameters"
    ]
    return parameters


def test_the_list_taking_query_parameters_are_found(
    similar_parameters: list[dict[str, Any]],
) -> None:
    assert set(query_array_schemas(similar_parameters)) == {"tag", "source"}


def test_a_lone_value_for_a_list_is_valid_on_the_wire(
    similar_parameters: list[dict[str, Any]],
) -> None:
    arrays = query_array_schemas(similar_parameters)
    # the case CI reported: the string "\U000566e8¬(²\U0001e9f8" where a list was asked
    failing = BASE + "?tag=%F1%96%BB%A8%C2%AC%28%C2%B2%F0%9E%A7%B8"
    assert valid_on_the_wire(["tag"], arrays, failing)
    assert valid_on_the_wire(["tag", "source"], arrays, BASE + "?tag=1.5&source=x&k=3")


@pytest.mark.parametrize(
    ("mutated", "query"),
    [
        (["tag"], [("tag", "")]),  # an empty tag breaks minLength
        (["tag"], [("tag", "x" * 129)]),  # too long a tag
        (["tag"], [("tag", str(i)) for i in range(33)]),  # more tags than maxItems
        (["tag"], [("k", "3")]),  # the mutated list was not sent at all
        (["k"], [("k", "0")]),  # a scalar parameter: not this hook's business
        (["tag", "k"], [("tag", "a"), ("k", "0")]),  # another mutation still stands
        ([], [("tag", "a")]),  # nothing says what was mutated
    ],
)
def test_every_other_negative_case_is_kept(
    similar_parameters: list[dict[str, Any]], mutated: list[str], query: list[tuple[str, str]]
) -> None:
    arrays = query_array_schemas(similar_parameters)
    assert not valid_on_the_wire(mutated, arrays, BASE + "?" + urlencode(query))
