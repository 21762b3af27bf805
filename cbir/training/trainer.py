"""Training a projection head on a frozen model's descriptors.

The shared MobileNet exists only as ONNX, so what is trained is a head on its (frozen)
descriptors: computed once through Triton and cached, which makes an epoch a few matrix
products (flowers17 trains in seconds on two cores). Batches hold P classes x K images, so
every query has positives; each epoch ends with a validation mAP (leave-one-out over the
validation images) and a checkpoint, from which an interrupted run resumes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cbir.evaluation.metrics import leave_one_out
from cbir.models.runtime import Head
from cbir.training.losses import (
    CrossBatchMemory,
    Mining,
    Reduction,
    contrastive_loss,
    koleo_loss,
    triplet_loss,
)
from cbir.training.whitening import choose_shrinkage, learned_whitening

log = logging.getLogger("cbir.train")

Loss = Literal["triplet", "contrastive"]
HeadKind = Literal["linear", "mlp"]


class TrainingError(ValueError):
    """Training cannot go on as asked; the message says what to change."""


@dataclass(frozen=True)
class TrainOptions:
    loss: Loss = "triplet"
    mining: Mining = "semi-hard"
    reduction: Reduction = "per-query"
    margin: float = 0.2  # δ of the triplet loss (squared distances of unit vectors: 0..4)
    beta: float = 0.5  # the contrastive loss's negative margin
    memory: int = 0  # cross-batch memory size (contrastive); 0: none
    koleo: float = 0.0  # λ of the KoLeo regulariser
    head: HeadKind = "linear"
    # the linear head's start: a random orthogonal projection, or learned whitening (closed
    # form, from the training labels) with this shrinkage
    init: Literal["orthogonal", "whitening"] = "orthogonal"
    shrinkage: float | None = 1.0  # None: chosen on class splits of the training data
    dim: int = 256
    hidden: int = 1024  # the MLP head's hidden width
    epochs: int = 30
    classes_per_batch: int = 8  # P
    per_class: int = 4  # K
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def describe(self) -> str:
        if self.loss == "triplet":
            what = f"triplet δ={self.margin} {self.mining} {self.reduction}"
        else:
            what = f"contrastive β={self.beta} memory={self.memory}"
        if self.koleo:
            what += f" + KoLeo λ={self.koleo}"
        shrinkage = "auto" if self.shrinkage is None else self.shrinkage
        start = f" from whitening (shrinkage {shrinkage})" if self.init == "whitening" else ""
        return (
            f"{what}, {self.head} head to {self.dim}-d{start}, {self.epochs} epochs, "
            f"seed {self.seed}"
        )


@dataclass
class Epoch:
    epoch: int
    loss: float
    validation_map: float | None


@dataclass
class Trained:
    head: Head
    history: list[Epoch] = field(default_factory=list)
    resumed_from: int = 0
    chosen: dict[str, Any] = field(default_factory=dict)  # what training chose, e.g. shrinkage


class ProjectionHead(nn.Module):
    """Linear, or Linear-ReLU-Linear; output L2-normalised."""

    def __init__(self, kind: HeadKind, dim_in: int, dim: int, hidden: int) -> None:
        super().__init__()
        if kind == "linear":
            linear = nn.Linear(dim_in, dim)
            # an orthogonal start: a random rotation-projection keeps the frozen descriptor's
            # geometry (nearly), so training starts from the frozen quality, not from noise
            nn.init.orthogonal_(linear.weight)
            nn.init.zeros_(linear.bias)
            self.layers = nn.Sequential(linear)
        else:
            self.layers = nn.Sequential(
                nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim)
            )

    def start_from(self, weight: np.ndarray, bias: np.ndarray) -> None:
        linear = self.layers[0]
        assert isinstance(linear, nn.Linear)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.layers(x), dim=1)

    def export(self) -> Head:
        linear = [m for m in self.layers if isinstance(m, nn.Linear)]
        return Head(
            tuple(m.weight.detach().numpy().copy() for m in linear),
            tuple(m.bias.detach().numpy().copy() for m in linear),
        )


def batches(
    labels: np.ndarray, options: TrainOptions, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of P x K batches: about as many items as the training set, every class
    drawn in proportion to its size, each class's images taken in a shuffled cycle."""
    classes = np.unique(labels)
    if len(classes) < 2:
        raise TrainingError("training needs at least two classes")
    members = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    cursor = dict.fromkeys(classes, 0)
    per_batch = min(options.classes_per_batch, len(classes))
    sizes = np.array([len(members[c]) for c in classes], dtype=np.float64)
    count = max(1, math.ceil(len(labels) / (per_batch * options.per_class)))
    out = []
    for _ in range(count):
        chosen = rng.choice(classes, size=per_batch, replace=False, p=sizes / sizes.sum())
        batch = []
        for c in chosen:
            for _ in range(options.per_class):
                items = members[c]
                batch.append(items[cursor[c] % len(items)])
                cursor[c] += 1
        out.append(np.array(batch))
    return out


def embedded_by(model: nn.Module, inputs: np.ndarray, chunk: int = 64) -> np.ndarray:
    """The model's embeddings of `inputs`, in chunks (a backbone's activations are big)."""
    with torch.no_grad():
        parts = [
            model(torch.from_numpy(inputs[start : start + chunk].astype(np.float32))).numpy()
            for start in range(0, len(inputs), chunk)
        ]
    return np.concatenate(parts)


def validation_map(model: nn.Module, features: np.ndarray, labels: np.ndarray) -> float:
    return leave_one_out(embedded_by(model, features), labels).mean_average_precision


def train(
    features: np.ndarray,
    labels: np.ndarray,
    options: TrainOptions,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    checkpoint: Path | None = None,
    on_epoch: Callable[[Epoch], None] = lambda _: None,
    model: nn.Module | None = None,
) -> Trained:
    """Train a head on `features` (rows L2-normalised) with `labels`; resume from
    `checkpoint` when it holds a run of the same options. `model` replaces the head alone:
    a module from `features` rows (any shape: a backbone's activations) to normalised
    embeddings, with the ProjectionHead it ends with as `.head` (cbir/training/backbone.py)."""
    if options.loss == "triplet" and options.per_class < 2:
        raise TrainingError("the triplet loss needs --per-class 2 or more (positives)")
    torch.manual_seed(options.seed)
    chosen: dict[str, Any] = {}
    if model is None:
        model = ProjectionHead(options.head, features.shape[1], options.dim, options.hidden)
        if options.init == "whitening":
            if options.head != "linear":
                raise TrainingError("--init whitening starts a linear head: add --head linear")
            shrinkage = options.shrinkage
            if shrinkage is None:
                shrinkage = choose_shrinkage(features, labels, options.dim, seed=options.seed)
                log.info("whitening shrinkage chosen", extra={"shrinkage": shrinkage})
            chosen["shrinkage"] = shrinkage
            weight, bias = learned_whitening(features, labels, options.dim, shrinkage)
            model.start_from(weight, bias)
    elif options.init == "whitening":
        raise TrainingError("--init whitening starts a head alone, not a backbone's stages")
    head = model if isinstance(model, ProjectionHead) else model.head
    assert isinstance(head, ProjectionHead)
    optimiser = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=options.lr,
        weight_decay=options.weight_decay,
    )
    memory = CrossBatchMemory(options.memory) if options.loss == "contrastive" else None
    history: list[Epoch] = []
    start = 0
    if checkpoint is not None and checkpoint.exists():
        state: dict[str, Any] = torch.load(checkpoint, weights_only=False)
        if state["options"] != asdict(options) or state["shape"] != list(features.shape):
            raise TrainingError(
                f"{checkpoint} holds a run with other options or data: delete it or choose "
                "another --checkpoint"
            )
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        history = [Epoch(**e) for e in state["history"]]
        if memory is not None:
            memory.embeddings, memory.labels = state["memory"]
        torch.set_rng_state(state["torch_rng"])
        start = len(history)
        log.info("resumed", extra={"checkpoint": str(checkpoint), "epoch": start})
    inputs = torch.from_numpy(features.astype(np.float32))
    targets = torch.from_numpy(labels.astype(np.int64))
    for epoch in range(start, options.epochs):
        rng = np.random.default_rng([options.seed, epoch])
        model.train()
        losses = []
        for batch in batches(labels, options, rng):
            index = torch.from_numpy(batch)
            embedded, batch_labels = model(inputs[index]), targets[index]
            if options.loss == "triplet":
                loss = triplet_loss(
                    embedded, batch_labels, options.margin, options.mining, options.reduction
                )
            else:
                loss = contrastive_loss(embedded, batch_labels, options.beta, memory)
            if options.koleo:
                loss = loss + options.koleo * koleo_loss(embedded)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if memory is not None:
                memory.push(embedded, batch_labels)
            losses.append(loss.item())
        model.eval()
        score = validation_map(model, *validation) if validation is not None else None
        record = Epoch(epoch + 1, float(np.mean(losses)), score)
        history.append(record)
        on_epoch(record)
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            partial = checkpoint.with_suffix(".partial")
            torch.save(
                {
                    "options": asdict(options),
                    "shape": list(features.shape),
                    "model": model.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "history": [asdict(e) for e in history],
                    "memory": (memory.embeddings, memory.labels) if memory else None,
                    "torch_rng": torch.get_rng_state(),
                },
                partial,
            )
            partial.replace(checkpoint)  # a kill mid-write leaves the last whole checkpoint
    return Trained(head.export(), history, start, chosen)


def embed_with(head: Head, features: np.ndarray) -> np.ndarray:
    """What the exported entry serves: the head, then L2-normalisation (numpy, as Triton)."""
    out = head.apply(features)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)
