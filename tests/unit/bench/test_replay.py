"""The replay benchmark's read-ahead A/B line: every measured rate, and the medians' ratio."""

from __future__ import annotations

from bench.replay import read_ahead_line


def test_the_ab_line_shows_each_rate_and_the_ratio_of_the_medians() -> None:
    line = read_ahead_line("synthetic-50000", {"off": [3000.0, 3400.0], "on": [4400.0, 4000.0]})
    assert "off 3000.0, 3400.0; on 4400.0, 4000.0" in line
    assert line.endswith("medians 3200 / 4200 = 1.31x")
