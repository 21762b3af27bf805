"""The checks that gate a switch.

The probe check: a labelled folder of images searched through a generation's own
collection, with its own model.

Each probe image is embedded by the generation's model (Triton) and searched in the
generation's collection (Milvus); a result is relevant when its tags (MySQL) carry the
probe's class. The figure is mAP@k, each list's precision averaged over its relevant ranks
and divided by k (so a list is judged on all k places); a probe that is itself indexed is
left out of its own list. The same probes, k and judgement for the building and the live
generation: their figures compare directly.

The collection check (`CollectionCheck`): label-free, over the images the probe does not
judge; see its docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from cbir.domain.errors import ReplayError
from cbir.domain.gate import (
    COLLECTION,
    Evaluation,
    TrainedOn,
    gate,
    pooled_average_precision,
    skipped,
)
from cbir.domain.generations import Generation
from cbir.domain.images import image_id_of
from cbir.domain.rows import ImageRow
from cbir.domain.vectors import Vectors
from cbir.evaluation.metrics import average_precision_at_k
from cbir.local_features.features import LocalFeatures
from cbir.local_features.geometry import Verifier
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


@dataclass(frozen=True)
class CollectionCheck:
    """The label-free check over the rest of the collection: `sample` indexed images (none
    carrying a tag in `skip_tags`, the classes a probe judges), each searched with its own
    stored vector in both generations; every image in either top k is compared with it by
    local-feature geometry, and those verified the same scene are what each ranking is judged
    on (verified mAP@k). Geometry knows no model, so two different models are judged alike."""

    sample: int = 200
    k: int = 10
    tolerance: float = 0.03
    skip_tags: frozenset[str] = frozenset()

    @property
    def metric(self) -> str:
        return f"verified mAP@{self.k}"


class StoredFeatures(Protocol):
    """The local features kept for indexed images (`cbir.local_features.store.FeatureStore`)."""

    def get_many(
        self, images: Sequence[tuple[str, str | None]]
    ) -> Mapping[str, LocalFeatures | None]: ...


# fewer judged images than this and a difference says nothing: the check is skipped, saying so
MIN_JUDGED = 20
PAGE = 500


class CollectionJudge:
    """Runs a CollectionCheck over the ports it needs."""

    def __init__(
        self,
        metadata: MetadataStore,
        index: VectorIndex,
        features: StoredFeatures | None,  # None: local features are off
        verifier: Verifier,
        min_inliers: int,
    ) -> None:
        self.metadata = metadata
        self.index = index
        self.features = features
        self.verifier = verifier
        self.min_inliers = min_inliers

    def evaluate(
        self, check: CollectionCheck, building: Generation, live: Generation | None
    ) -> Evaluation:
        def skip(why: str) -> Evaluation:
            return skipped(COLLECTION, check.metric, check.tolerance, why)

        if live is None:
            return skip("nothing live to compare with")
        if self.features is None:
            return skip(
                "local features are off (CBIR_LOCAL_FEATURES__ENABLED): they judge which "
                "results show the same scene"
            )
        rows = self._sample(check)
        if not rows:
            return skip("no indexed image outside the classes the probe judges")
        stored = self.features.get_many([(row.image_id, None) for row in rows])
        queries = {i: f for i, f in stored.items() if f is not None and len(f)}
        judged = self._judged(check, list(queries), queries, building, live)
        outside = " outside the trained classes" if check.skip_tags else ""
        if len(judged) < MIN_JUDGED:
            return skip(
                f"{len(judged)} of {len(rows)} sampled images{outside} have a same-scene "
                f"partner among either generation's top {check.k}, fewer than {MIN_JUDGED}: "
                "too few to judge"
            )
        value, live_value = (float(np.mean(scores)) for scores in zip(*judged, strict=True))
        scope = f"on {len(judged)} of {len(rows)} sampled images{outside}"
        return gate(
            check.metric, value, len(judged), live_value, check.tolerance, COLLECTION, scope
        )

    def _sample(self, check: CollectionCheck) -> list[ImageRow]:
        """The first `sample` indexed rows in id order without a skipped tag: content hashes
        in order are a uniform sample, the same for both generations and for every run."""
        found: list[ImageRow] = []
        after = ""
        while len(found) < check.sample:
            page = self.metadata.indexed_after(after, PAGE)
            found += [row for row in page if not check.skip_tags.intersection(row.tags)]
            if len(page) < PAGE:
                break
            after = page[-1].image_id
        return found[: check.sample]

    def _judged(
        self,
        check: CollectionCheck,
        ids: list[str],
        queries: Mapping[str, LocalFeatures],
        building: Generation,
        live: Generation,
    ) -> list[tuple[float, float]]:
        """(building's AP@k, live's AP@k) of each sampled image that has a verified partner
        in the pool of both top k."""
        rankings = [self._ranked(ids, generation, check.k) for generation in (building, live)]
        pools = {i: sorted(set(rankings[0].get(i, [])) | set(rankings[1].get(i, []))) for i in ids}
        candidates = sorted({c for pool in pools.values() for c in pool})
        features = self.features.get_many([(c, None) for c in candidates]) if self.features else {}
        judged: list[tuple[float, float]] = []
        for image_id in ids:
            pool = {c: f for c in pools[image_id] if (f := features.get(c)) is not None}
            found = self.verifier.verify_many(
                queries[image_id], list(pool.values()), [True] * len(pool), self.min_inliers
            )
            relevant = {
                c for c, v in zip(pool, found, strict=True) if v.inliers >= self.min_inliers
            }
            if relevant:
                building_ap, live_ap = (
                    pooled_average_precision(ranking.get(image_id, []), relevant, check.k)
                    for ranking in rankings
                )
                judged.append((building_ap, live_ap))
        return judged

    def _ranked(self, ids: list[str], generation: Generation, k: int) -> dict[str, list[str]]:
        """Each image's top k in the generation, searched with its own stored vector there
        (itself left out)."""
        vectors = self.index.vectors_of(ids, collection=generation.name)
        present = [i for i in ids if i in vectors]
        ranked: dict[str, list[str]] = {}
        for start in range(0, len(present), CHUNK):
            chunk = present[start : start + CHUNK]
            hits = self.index.search(
                np.stack([vectors[i] for i in chunk]), k + 1, collection=generation.name
            )
            for image_id, found in zip(chunk, hits, strict=True):
                ranked[image_id] = [h.image_id for h in found if h.image_id != image_id][:k]
        return ranked
