"""The switch gated by evaluation: pure logic, unit-tested without servers.

Before a building generation goes live, a labelled probe set is searched through it and
through the live one; it may go live only if its quality does not fall below the live
generation's by more than a tolerance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Evaluation:
    """A generation's quality on the probe set, as stored with it in the registry."""

    metric: str  # e.g. "mAP@10"
    value: float
    probes: int
    live_value: float | None  # the live generation's on the same probes; None: none live
    tolerance: float
    passed: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def gate(
    metric: str, value: float, probes: int, live_value: float | None, tolerance: float
) -> Evaluation:
    """The verdict: pass unless the candidate is worse than live by more than `tolerance`."""
    if live_value is None:
        return Evaluation(
            metric, value, probes, None, tolerance, True, f"{metric} {value:.4f}; nothing live"
        )
    floor = live_value - tolerance
    passed = value >= floor
    verb = "passes" if passed else "refused"
    return Evaluation(
        metric,
        value,
        probes,
        live_value,
        tolerance,
        passed,
        f"{verb}: {metric} {value:.4f} against the live generation's {live_value:.4f} "
        f"(at least {floor:.4f} needed, tolerance {tolerance})",
    )
