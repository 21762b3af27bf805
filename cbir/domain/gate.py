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


@dataclass(frozen=True)
class TrainedOn:
    """What a trained model learned from, kept beside it: the content ids of the images its
    training fitted (validation images held out are not among them). A probe set that holds
    any of them would gate the switch on the model's memory, not on its quality."""

    dataset: str
    classes: tuple[str, ...]
    images: frozenset[str]
    held_out: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "classes": list(self.classes),
            "images": sorted(self.images),
            "held_out": self.held_out,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainedOn:
        return cls(
            str(data["dataset"]),
            tuple(str(c) for c in data["classes"]),
            frozenset(str(i) for i in data["images"]),
            int(data.get("held_out", 0)),
        )

    def describe(self) -> str:
        shown = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
        held = f"; {self.held_out} held out for validation" if self.held_out else ""
        return (
            f"{len(self.images)} images of {self.dataset} in {len(self.classes)} classes "
            f"({shown}){held}"
        )
