"""The bound on a Milvus call and its retries (no server: the calls are functions that fail
the way pymilvus does)."""

from __future__ import annotations

import time

import grpc
import pytest

from cbir.adapters.vector_index import MilvusException, bounded, left, range_params, unreachable
from cbir.domain.deadline import Deadline
from cbir.domain.errors import Rejected, ServiceUnavailable
from cbir.settings import MilvusSettings


class RpcFailure(grpc.RpcError):
    def __init__(self, status: grpc.StatusCode) -> None:
        self.status = status

    def code(self) -> grpc.StatusCode:
        return self.status


def wrapped(status: grpc.StatusCode) -> MilvusException:
    """What pymilvus raises when it stops retrying: its exception, the gRPC one as cause."""
    try:
        raise MilvusException(message="Retry run out of 0 retry times") from RpcFailure(status)
    except MilvusException as exc:
        return exc


def test_unreachable_is_grpc_unavailable_however_deep() -> None:
    assert unreachable(RpcFailure(grpc.StatusCode.UNAVAILABLE))
    assert unreachable(wrapped(grpc.StatusCode.UNAVAILABLE))
    assert not unreachable(wrapped(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert not unreachable(MilvusException(message="collection not loaded"))
    assert not unreachable(None)


def test_a_cause_chain_that_loops_ends() -> None:
    # pymilvus re-raises with `raise e from e`: the exception is its own cause
    looped = MilvusException(message="collection not loaded")
    looped.__cause__ = looped
    assert not unreachable(looped)


def test_an_unreachable_milvus_is_tried_again_within_the_bound() -> None:
    attempts: list[float] = []

    def call(deadline: Deadline) -> str:
        attempts.append(left(deadline)["timeout"])
        if len(attempts) < 3:
            raise wrapped(grpc.StatusCode.UNAVAILABLE)
        return "answer"

    assert bounded(MilvusSettings(), "a search", call, 2.0, sleep=lambda _: None) == "answer"
    assert len(attempts) == 3 and all(0 < a <= 2.0 for a in attempts)
    assert left(Deadline(1.0))["retry_times"] == 0  # pymilvus's own retries are off


def test_retries_stop_at_the_bound_with_a_503_cause() -> None:
    def call(deadline: Deadline) -> str:
        raise wrapped(grpc.StatusCode.UNAVAILABLE)

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="Milvus"):
        bounded(MilvusSettings(), "a search", call, 0.3)
    assert time.monotonic() - started < 0.6


def test_a_timeout_or_a_refusal_is_not_tried_again() -> None:
    attempts: list[int] = []

    def timed_out(deadline: Deadline) -> str:
        attempts.append(1)
        raise RpcFailure(grpc.StatusCode.DEADLINE_EXCEEDED)

    with pytest.raises(ServiceUnavailable, match=r"no answer within 2\.0 s"):
        bounded(MilvusSettings(), "a search", timed_out, 2.0, sleep=lambda _: None)

    def refused(deadline: Deadline) -> str:
        attempts.append(1)
        raise MilvusException(code=5, message="illegal argument")

    with pytest.raises(Rejected):
        bounded(MilvusSettings(), "a search", refused, 2.0, sleep=lambda _: None)

    def invalid_name(deadline: Deadline) -> str:
        attempts.append(1)
        # as a search of a collection named by a UUID was answered (pymilvus's retry message
        # in front): refused for good, not "did not answer"
        raise MilvusException(
            code=1100,
            message="Retry run out of 0 retry times, message=Invalid collection name: 85d0bc8c"
            "-f155. the first character of a collection name must be an underscore or letter",
        )

    with pytest.raises(Rejected, match="Invalid collection name"):
        bounded(MilvusSettings(), "a search", invalid_name, 2.0, sleep=lambda _: None)
    assert len(attempts) == 3


def test_channels_handed_out_again_are_tried_again_within_the_bound() -> None:
    # Milvus after a node's restart or hang: healthy, yet no node serves a channel for a while
    attempts: list[int] = []

    def call(deadline: Deadline) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise MilvusException(code=503, message="channel not available[channel=dml_0v0]")
        return "answer"

    assert bounded(MilvusSettings(), "a query", call, 2.0, sleep=lambda _: None) == "answer"
    assert len(attempts) == 3
    assert unreachable(MilvusException(code=503, message="channel not available"))
    assert not unreachable(MilvusException(code=500, message="channel not found"))


def test_a_score_threshold_is_a_range_search_bound_per_metric() -> None:
    # IP: radius < score, so the radius sits just under the threshold (equal scores kept)
    ip = range_params("IP", 0.8)
    assert ip["radius"] < 0.8 and 0.8 - ip["radius"] < 1e-5 and "range_filter" not in ip
    # L2 on unit vectors: squared distance = 2 - 2 cos, and distance < radius
    l2 = range_params("L2", 0.8)
    assert l2["radius"] > 0.4 and l2["radius"] - 0.4 < 1e-5
