"""Schemathesis hooks for tests/integration/test_api_fuzz.py (loaded through
SCHEMATHESIS_HOOKS by that test): one `filter_failure`, which drops the fuzzer's own false
positive on repeated query keys and nothing else.

A list in a query string is a repeated key (`?tag=a&tag=b`), so `?tag=a` *is* the one-element
list `["a"]`. When schemathesis makes a negative case by changing such a parameter's type (the
string `"a"`, the number `1.5`, the object `{"a": ...}`), the request it sends is
byte-for-byte a valid one, the API rightly answers 200, and schemathesis 4.32.5 reports
"ST201 Schema-violating request accepted" (its own wire-equivalence guards cover scalar
parameters and path arrays, not query arrays). The hook judges such a failure by the query
actually sent: when every mutated parameter is a query parameter and the values sent for it,
read as the server reads them (a list of strings), satisfy its schema, the request was not
invalid and the failure is dropped. Any other failure (a list too long, an empty tag, a
mutation anywhere else) is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema_rs
import schemathesis
from schemathesis import Case, HookContext, Response
from schemathesis.core.failures import AcceptedNegativeData, Failure
from schemathesis.core.parameters import ParameterLocation


def query_array_schemas(parameters: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The schemas of the query parameters that take a list (an array, or an array or null)."""
    arrays: dict[str, Mapping[str, Any]] = {}
    for parameter in parameters:
        schema = parameter.get("schema", {})
        branches = [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]
        if parameter.get("in") == "query" and any(b.get("type") == "array" for b in branches):
            arrays[parameter["name"]] = schema
    return arrays


def valid_on_the_wire(
    mutated: list[str], arrays: Mapping[str, Mapping[str, Any]], url: str
) -> bool:
    """Whether every mutated parameter is a list-taking query parameter whose values, as sent
    in `url`, are a valid list: then the request the fuzzer calls invalid is a valid one."""
    if not mutated:
        return False
    sent = parse_qs(urlparse(url).query, keep_blank_values=True)
    for name in mutated:
        if name not in arrays or name not in sent:
            return False
        if not jsonschema_rs.validator_for(dict(arrays[name])).is_valid(sent[name]):
            return False
    return True


@schemathesis.hook
def filter_failure(context: HookContext, failure: Failure, case: Case, response: Response) -> bool:
    if not isinstance(failure, AcceptedNegativeData) or case.meta is None:
        return True
    negative_elsewhere = any(
        component.mode.is_negative
        for location, component in case.meta.components.items()
        if location != ParameterLocation.QUERY
    )
    mutations = case.meta.phase.data.mutations
    if negative_elsewhere or any(
        m.parameter_location != ParameterLocation.QUERY or m.parameter is None for m in mutations
    ):
        return True
    arrays = query_array_schemas(case.operation.definition.raw.get("parameters", []))
    mutated = [m.parameter for m in mutations if m.parameter is not None]
    return not valid_on_the_wire(mutated, arrays, str(response.request.url))
