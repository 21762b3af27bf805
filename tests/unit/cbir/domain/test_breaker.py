"""The circuit breaker: opens after failures in a row, answers at once while open, probes
once after the pause, closes on a success."""

from __future__ import annotations

import pytest

from cbir.domain.breaker import CircuitBreaker, CircuitOpen
from cbir.domain.errors import Rejected, ServiceUnavailable

DOWN = ServiceUnavailable("MySQL", "127.0.0.1:3306", "CBIR_MYSQL__HOST", "timed out")


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def fail() -> None:
    raise DOWN


def test_it_opens_after_failures_in_a_row_and_then_answers_without_asking() -> None:
    clock = Clock()
    breaker = CircuitBreaker("MySQL", failures_to_open=3, open_s=5, clock=clock)
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            breaker.call(fail)
    asked: list[int] = []
    with pytest.raises(CircuitOpen, match=r"MySQL failed 3 times in a row .*for 5 s"):
        breaker.call(lambda: asked.append(1))
    assert asked == [] and breaker.is_open


def test_after_the_pause_one_request_probes_and_a_success_closes_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("Milvus", failures_to_open=1, open_s=5, clock=clock)
    with pytest.raises(ServiceUnavailable):
        breaker.call(fail)
    clock.now += 5
    assert breaker.call(lambda: "back") == "back"
    assert not breaker.is_open and breaker.failures == 0


def test_a_failed_probe_opens_it_again_for_another_pause() -> None:
    clock = Clock()
    breaker = CircuitBreaker("Triton", failures_to_open=1, open_s=5, clock=clock)
    with pytest.raises(ServiceUnavailable):
        breaker.call(fail)
    clock.now += 6
    with pytest.raises(ServiceUnavailable):
        breaker.call(fail)  # the probe
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: None)


def test_a_refused_value_is_no_sign_of_an_unhealthy_dependency() -> None:
    breaker = CircuitBreaker("MySQL", failures_to_open=1, open_s=5, clock=Clock())

    def refuse() -> None:
        raise Rejected("too long")

    with pytest.raises(Rejected):
        breaker.call(refuse)
    assert not breaker.is_open
