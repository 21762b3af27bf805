"""The retry policy: transient waits, permanent refuses at once, unexpected gives up."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cbir.domain.errors import Rejected, ServiceUnavailable
from cbir.domain.retry import GaveUp, RetryPolicy


def flaky(failures: list[Exception], result: str = "done") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def action() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return calls, action


def test_a_service_that_is_away_is_waited_for_with_back_off_until_it_answers() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(first_wait_s=0.5, max_wait_s=2.0, sleep=sleeps.append)
    down: list[Exception] = [ServiceUnavailable("MinIO", "x", "Y", "refused") for _ in range(5)]
    calls, action = flaky(down)
    assert policy.run(action, "fetch") == "done"
    assert len(calls) == 6
    assert sleeps == [0.5, 1.0, 2.0, 2.0, 2.0]  # doubling, capped


def test_a_refused_value_is_raised_at_once_without_waiting() -> None:
    sleeps: list[float] = []
    calls, action = flaky([Rejected("too long")])
    with pytest.raises(Rejected):
        RetryPolicy(sleep=sleeps.append).run(action, "write")
    assert len(calls) == 1 and sleeps == []


def test_an_unexpected_error_is_retried_a_bounded_number_of_times_then_given_up() -> None:
    sleeps: list[float] = []
    calls, action = flaky([KeyError("bug") for _ in range(10)])
    policy = RetryPolicy(unexpected_attempts=3, sleep=sleeps.append)
    with pytest.raises(GaveUp, match=r"write failed 3 times \(KeyError: 'bug'\)"):
        policy.run(action, "write")
    assert len(calls) == 3 and len(sleeps) == 2


def test_an_unexpected_error_that_goes_away_is_forgotten() -> None:
    calls, action = flaky([KeyError("once")])
    assert RetryPolicy(sleep=lambda _s: None).run(action, "write") == "done"
    assert len(calls) == 2


def test_a_command_waits_for_a_service_a_bounded_time_then_says_so() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(first_wait_s=1.0, max_wait_s=4.0, give_up_after_s=10, sleep=sleeps.append)
    down: list[Exception] = [ServiceUnavailable("MinIO", "x", "Y", "refused") for _ in range(99)]
    _calls, action = flaky(down)
    with pytest.raises(ServiceUnavailable, match="MinIO"):
        policy.run(action, "put")
    assert sleeps == [1.0, 2.0, 4.0, 4.0]  # 11 s waited: past the bound, it stops
