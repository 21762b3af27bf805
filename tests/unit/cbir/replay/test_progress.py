"""The pure parts of a replay: lag, rate and ETA, throttling, the switch verdict, and the
names of generations and their topics."""

from __future__ import annotations

import argparse
import re

import pytest

from cbir.adapters.vector_index import search_params
from cbir.cli.replay import _param
from cbir.domain.generations import generation_name
from cbir.domain.models import ModelId
from cbir.domain.switch import SwitchCheck, switch_verdict
from cbir.replay.progress import Throughput, lag, pause_for_rate
from cbir.settings import ProcessorsSettings

MODEL_ID = "mobilenet:1:1024d:gap:0123456789abcdef"


def test_lag_counts_every_partition_from_its_position_to_its_end() -> None:
    assert lag({0: 100, 1: 50, 2: 0}, {0: 40, 1: 50}) == 60
    assert lag({0: 10}, {}) == 10  # never read: all of it
    assert lag({0: 10}, {0: 12}) == 0  # a position past the end (compaction) is not negative


def test_rate_is_over_the_window_and_eta_follows_it() -> None:
    meter = Throughput(window_s=10.0)
    assert meter.rate == 0.0 and meter.eta_s(100) is None
    for second in range(6):
        meter.add(100, now=float(second))
    assert meter.rate == pytest.approx(100.0)
    assert meter.eta_s(500) == pytest.approx(5.0)
    assert meter.eta_s(0) == 0.0
    meter.add(1000, now=30.0)  # old samples leave the window; the last interval remains
    assert meter.rate == pytest.approx(1000 / 25)
    assert meter.total == 1600


def test_throttle_sleeps_only_what_keeps_the_rate_under_the_limit() -> None:
    assert pause_for_rate(100, 0.2, 0) == 0.0  # no limit
    assert pause_for_rate(100, 0.2, 200) == pytest.approx(0.3)
    assert pause_for_rate(100, 1.0, 200) == 0.0  # already slower than the limit


@pytest.mark.parametrize(
    ("check", "waits_for"),
    [
        (SwitchCheck(5, 0, 10, 10), "replaying"),
        (SwitchCheck(0, 3, 10, 10), "processors"),
        (SwitchCheck(0, 0, 9, 10), "counts differ"),
        (SwitchCheck(0, 0, 11, 10), "counts differ"),
    ],
)
def test_a_generation_goes_live_only_when_complete(check: SwitchCheck, waits_for: str) -> None:
    verdict = switch_verdict(check)
    assert verdict is not None and waits_for in verdict


def test_a_caught_up_generation_with_equal_counts_may_go_live() -> None:
    assert switch_verdict(SwitchCheck(0, 0, 1360, 1360)) is None


def test_generation_names_carry_the_alias_the_number_and_the_model() -> None:
    assert ModelId.parse(MODEL_ID).slug == "mobilenet_v1_01234567"
    name = generation_name("images", 12, MODEL_ID)
    assert name == "images__g12_mobilenet_v1_01234567"
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)  # a valid Milvus collection name
    odd = generation_name("images", 1, "vit-b/16:2:256d:gem:ffffffffffff")
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", odd)
    assert generation_name("images", 1, MODEL_ID) != generation_name("images", 2, MODEL_ID)


def test_search_parameters_follow_the_index_type_of_the_generation() -> None:
    processors = ProcessorsSettings()
    assert search_params("HNSW", "IP", processors, 80)["params"] == {"ef": 80}
    assert search_params("DISKANN", "IP", processors)["params"] == {
        "search_list": processors.diskann_search_list
    }
    assert search_params("IVF_FLAT", "IP", processors, 8)["params"] == {"nprobe": 8}
    assert search_params("FLAT", "IP", processors)["params"] == {}


def test_index_parameters_parse_as_numbers_where_they_are_numbers() -> None:
    assert _param("M=32") == ("M", 32)
    assert _param("mode=fast") == ("mode", "fast")
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        _param("M")
