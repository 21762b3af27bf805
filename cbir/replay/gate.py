"""The probe-set evaluation that gates a switch: a labelled folder of images searched
through a generation's own collection, with its own model.

Each probe image is embedded by the generation's model (Triton) and searched in the
generation's collection (Milvus); a result is relevant when its tags (MySQL) carry the
probe's class. The figure is mAP@k, each list's precision averaged over its relevant ranks
and divided by k (so a list is judged on all k places); a probe that is itself indexed is
left out of its own list. The same probes, k and judgement for the building and the live
generation: their figures compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbir.domain.errors import ReplayError
from cbir.domain.gate import TrainedOn
from cbir.domain.generations import Generation
from cbir.domain.images import image_id_of
from cbir.domain.vectors import Vectors
from cbir.evaluation.metrics import average_precision_at_k
from cbir.ports import Embedders, MetadataStore, VectorIndex

CHUNK = 32


@dataclass(frozen=True)
class Probe:
    """Labelled images (class, bytes) and the gate's tolerance and depth."""

    images: tuple[tuple[str, bytes], ...]
    tolerance: float = 0.02
    k: int = 10

    @classmethod
    def from_folder(cls, folder: Path, tolerance: float = 0.02, k: int = 10) -> Probe:
        """A folder with one subfolder of images per class (the class is the tag the
        indexed images carry)."""
        from cbir.evaluation.run import EvalError, load_dataset

        try:
            dataset = load_dataset(folder)
        except EvalError as exc:
            raise ReplayError(f"--probe: {exc}") from exc
        images = tuple(
            (dataset.classes[label], path.read_bytes())
            for path, label in zip(dataset.paths, dataset.labels, strict=True)
        )
        return cls(images, tolerance, k)

    @property
    def metric(self) -> str:
        return f"mAP@{self.k}"

    def refuse_trained(self, model: str, trained: TrainedOn) -> None:
        """Raise ReplayError when any probe image is one `model` was trained on: a gate on
        them measures what the model memorised, and would pass a model that is worse on
        everything else."""
        seen = [image_id_of(data) in trained.images for _, data in self.images]
        if any(seen):
            raise ReplayError(
                f"--probe: {sum(seen)} of the {len(seen)} probe images are images {model} was "
                f"trained on ({trained.describe()}); a gate on them measures its memory, not "
                "its quality. Probe with labelled images it never saw: the images `cbir train "
                "--validation` held out, or another folder of the same classes"
            )


def probe_quality(
    probe: Probe,
    generation: Generation,
    embedders: Embedders,
    index: VectorIndex,
    metadata: MetadataStore,
) -> float:
    """The generation's mAP@k on the probe set."""
    embedder = embedders(generation.model)
    labels: list[str] = []
    own_ids: list[str] = []
    vectors: list[Vectors] = []
    for start in range(0, len(probe.images), CHUNK):
        chunk = probe.images[start : start + CHUNK]
        embedded, errors = embedder.embed([data for _, data in chunk])
        for (label, data), vector, error in zip(chunk, embedded, errors, strict=True):
            if not error:
                labels.append(label)
                own_ids.append(image_id_of(data))
                vectors.append(vector)
    if not vectors:
        raise ReplayError("--probe: the model could read none of the probe images")
    hits = index.search(np.stack(vectors), probe.k + 1, collection=generation.name)
    rows = metadata.lookup(sorted({hit.image_id for found in hits for hit in found}))
    scores = []
    for label, own, found in zip(labels, own_ids, hits, strict=True):
        ranked = [hit.image_id for hit in found if hit.image_id != own][: probe.k]
        relevant = np.array([id_ in rows and label in rows[id_].tags for id_ in ranked])
        scores.append(average_precision_at_k(relevant, probe.k, probe.k))
    return float(np.mean(scores))
