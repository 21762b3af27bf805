"""The switch gated by evaluation: pure logic, unit-tested without servers.

Before a building generation goes live it is judged beside the live one by up to two checks,
each with its own tolerance; it may go live only if neither finds it worse by more than that:
- `probe`: a labelled probe set searched through both (the classes a user cares about);
- `collection`: label-free, over the rest of the collection: sampled indexed images searched
  through both, their results judged by local-feature geometry (same scene or not), so that a
  model that improves the labelled classes cannot quietly make everything else worse.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PROBE, COLLECTION = "probe", "collection"


@dataclass(frozen=True)
class Evaluation:
    """One check of a generation beside the live one, as stored with it in the registry."""

    metric: str  # e.g. "mAP@10"
    value: float | None  # None: the check was skipped (the detail says why)
    probes: int  # the queries judged
    live_value: float | None  # the live generation's on the same queries; None: none live
    tolerance: float
    passed: bool
    detail: str
    check: str = PROBE  # which check: probe | collection

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        fields = ("metric", "value", "probes", "live_value", "tolerance", "passed", "detail")
        return cls(**{f: data[f] for f in fields}, check=data.get("check", PROBE))

    def summary(self) -> str:
        """One line for a table: `mAP@10 0.8123 passed`."""
        if self.value is None:
            return f"{self.check}: skipped"
        return f"{self.metric} {self.value:.4f} {'passed' if self.passed else 'refused'}"


def gate(
    metric: str,
    value: float,
    probes: int,
    live_value: float | None,
    tolerance: float,
    check: str = PROBE,
    scope: str = "",
) -> Evaluation:
    """The verdict: pass unless the candidate is worse than live by more than `tolerance`.
    `scope` says what was judged (e.g. "on 120 sampled images"), for the detail."""
    on = f" {scope}" if scope else ""
    if live_value is None:
        detail = f"{metric} {value:.4f}{on}; nothing live"
        return Evaluation(metric, value, probes, None, tolerance, True, detail, check)
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
        f"{verb}: {metric}{on} {value:.4f} against the live generation's {live_value:.4f} "
        f"(at least {floor:.4f} needed, tolerance {tolerance})",
        check,
    )


def skipped(check: str, metric: str, tolerance: float, why: str) -> Evaluation:
    """A check that could not judge: recorded, and never a refusal on its own."""
    return Evaluation(metric, None, 0, None, tolerance, True, f"skipped: {why}", check)


@dataclass(frozen=True)
class Verdict:
    """Every check run before a switch; the switch happens only if all passed."""

    checks: tuple[Evaluation, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def detail(self) -> str:
        return "; ".join(f"{check.check} check {check.detail}" for check in self.checks)

    def refusals(self) -> str:
        return "; ".join(
            f"the {check.check} check {check.detail}" for check in self.checks if not check.passed
        )

    def as_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [check.as_json() for check in self.checks]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        """Also a record written before there were several checks: one probe evaluation."""
        if "checks" not in data:
            return cls((Evaluation.from_json(data),))
        return cls(tuple(Evaluation.from_json(check) for check in data["checks"]))

    def of(self, check: str) -> Evaluation | None:
        return next((c for c in self.checks if c.check == check), None)

    def summary(self) -> str:
        return "; ".join(check.summary() for check in self.checks)


def pooled_average_precision(ranked: list[str], relevant: set[str], k: int) -> float:
    """AP@k of one ranking judged against a pool's relevant items (those found relevant among
    every compared ranking's top k): precision at each relevant rank, summed, over
    min(|relevant|, k). Both rankings are judged against the same pool, so their figures
    compare directly (the pooling of TREC-style evaluation)."""
    if not relevant:
        raise ValueError("no relevant item in the pool: nothing to judge")
    hits, total = 0, 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            hits += 1
            total += hits / rank
    return total / min(len(relevant), k)


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
