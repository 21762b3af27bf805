"""The fault matrix's judgement of a search answer and its table."""

from __future__ import annotations

from cbir.bench.faults import render_markdown, verdict_of_answer


def test_a_503_in_the_error_shape_is_a_refusal_anything_else_unanswered_a_failure() -> None:
    assert verdict_of_answer(200, "{}") == "answered"
    body = '{"error":"service_unavailable","detail":"MySQL at ... did not answer"}'
    assert verdict_of_answer(503, body) == "refused"
    assert verdict_of_answer(503, "<html>Service Unavailable</html>") == "failed"
    assert verdict_of_answer(500, body) == "failed"


def test_the_table_has_a_row_per_fault_with_its_verdict() -> None:
    record = {
        "part": "redis",
        "fault": "kill",
        "images": 300,
        "lost": 0,
        "duplicated": 0,
        "dead_lettered": 0,
        "seconds_to_all_indexed": 12.5,
        "searches": {"answered": 40, "refused": 2},
        "slowest_search_s": 0.3,
        "restarts": {"redis": 1},
        "verdict": "ok",
    }
    document = {
        "date": "2026-12-02T00:00:00Z",
        "machine": {"cpu": "x", "cores": 2},
        "commit": "abc",
        "command": "cbir bench faults",
        "records": [record],
    }
    table = render_markdown(document)
    assert (
        "| redis | kill | 300 | 0 | 0 | 0 | 12.5 | 40 / 2 / 0 / 0 / 0 | 0.3 | redis 1 | ok |"
        in table
    )
