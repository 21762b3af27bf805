"""`cbir eval`: retrieval quality of a model on a labelled folder-per-class dataset, searched
exhaustively (the reference) and through real Milvus indexes, with and without re-ranking,
leave-one-out: every image queries all the others.

Embeddings come from the model served by Triton and are cached on disk by model id and
dataset content, so further runs (other indexes, re-ranking) skip Triton. Each index is a
temporary collection of its own (`eval__...`), dropped at the end.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cbir.domain.images import IMAGE_SUFFIXES
from cbir.evaluation.metrics import evaluate, exhaustive_rankings, judge
from cbir.evaluation.rerank import alpha_query_expansion, rescore
from cbir.ports import Embedder, ScratchIndex

log = logging.getLogger("cbir.eval")

BUILD_KEYS = {"M", "efConstruction", "nlist", "m", "nbits"}
SEARCH_KEYS = {"ef", "nprobe", "search_list"}
MILVUS_MAX_TOPK = 16384


class EvalError(ValueError):
    """A request the evaluation cannot carry out; the message says what to change."""


@dataclass(frozen=True)
class IndexSpec:
    """An index to evaluate: `exhaustive` (numpy, the reference) or a Milvus index type with
    its build and search parameters, written `HNSW:M=16,efConstruction=200,ef=64`."""

    index_type: str
    build: dict[str, int] = field(default_factory=dict)
    search: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> IndexSpec:
        kind, _, rest = text.partition(":")
        kind = kind.strip().upper()
        if kind == "EXHAUSTIVE":
            return cls("exhaustive")
        if not re.fullmatch(r"[A-Z_0-9]+", kind):
            raise EvalError(f"{text!r}: an index is TYPE or TYPE:key=value,...")
        build: dict[str, int] = {}
        search: dict[str, int] = {}
        for pair in filter(None, (p.strip() for p in rest.split(","))):
            key, _, value = pair.partition("=")
            if key in BUILD_KEYS:
                target = build
            elif key in SEARCH_KEYS:
                target = search
            else:
                known = ", ".join(sorted(BUILD_KEYS | SEARCH_KEYS))
                raise EvalError(f"{text!r}: unknown parameter {key!r} (known: {known})")
            if not value.isdigit():
                raise EvalError(f"{text!r}: {key} needs a whole number")
            target[key] = int(value)
        return cls(kind, build, search)

    @property
    def label(self) -> str:
        params = {**self.build, **self.search}
        return self.index_type + (
            " " + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
        )

    def search_params(self, depth: int) -> dict[str, Any]:
        """Milvus search parameters; an effort below the depth asked for is raised to it
        (HNSW and DiskANN cannot return more results than their candidate list)."""
        params: dict[str, Any] = dict(self.search)
        if self.index_type == "HNSW":
            params["ef"] = max(params.get("ef", 64), depth)
        if self.index_type == "DISKANN":
            params["search_list"] = max(params.get("search_list", 100), depth)
        if self.index_type.startswith("IVF"):
            params.setdefault("nprobe", 16)
        return params

    def index_params(self) -> dict[str, Any]:
        build: dict[str, Any] = dict(self.build)
        if self.index_type.startswith("IVF"):
            build.setdefault("nlist", 64)
        if self.index_type == "HNSW":
            build.setdefault("M", 16)
            build.setdefault("efConstruction", 200)
        return build


@dataclass
class Dataset:
    name: str
    paths: list[Path]
    labels: np.ndarray
    classes: list[str]

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path, label in zip(self.paths, self.labels, strict=True):
            digest.update(f"{self.classes[label]}/{path.name}:{path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]


def load_dataset(
    folder: Path | None, classes: Sequence[str] | None = None, per_class: int | None = None
) -> Dataset:
    """Images in one subfolder per class (names sorted; `classes` and `per_class` take a
    subset: the first images of each)."""
    if folder is None:
        raise EvalError(
            "no dataset given: name a folder with one subfolder of images per class "
            "(e.g. ../shared/data/flowers17, the labelled photographs beside the repository)"
        )
    if not folder.is_dir():
        raise EvalError(f"{folder}: no such folder (a folder with one subfolder per class)")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    chosen = list(classes) if classes else found
    missing = [c for c in chosen if c not in found]
    if missing:
        raise EvalError(f"{folder}: no class folder {', '.join(missing)}")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(chosen):
        images = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[
            :per_class
        ]
        paths += images
        labels += [label] * len(images)
    if len(chosen) < 2 or len(paths) < 3:
        raise EvalError(f"{folder}: needs at least 2 classes and 3 images, found {len(paths)}")
    return Dataset(folder.name, paths, np.array(labels), chosen)


def embed(
    embedder: Embedder,
    dataset: Dataset,
    cache_dir: Path,
    progress: Callable[[int], None] = lambda _: None,
) -> tuple[np.ndarray, str]:
    """The dataset's embeddings through Triton (cached by model id and dataset), its model id."""
    model_id = embedder.identity().model_id
    cache = cache_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model_id)}-{dataset.fingerprint}.npy"
    if cache.exists():
        return np.load(cache), model_id
    vectors = []
    for start in range(0, len(dataset.paths), 32):
        chunk = [p.read_bytes() for p in dataset.paths[start : start + 32]]
        found, errors = embedder.embed(chunk)
        bad = [str(p) for p, e in zip(dataset.paths[start:], errors, strict=False) if e]
        if bad:
            raise EvalError(f"the model could not read {', '.join(bad)}: remove them")
        vectors.append(found)
        progress(len(chunk))
    result = np.concatenate(vectors).astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(cache, result)
    return result, model_id


# the whole dataset's vectors are indexed at once: a build is given this long
BUILD_WAIT_S = 1800.0
# a new scratch index of vectors of this dimension (the wiring makes Milvus's)
ScratchFactory = Callable[[int], ScratchIndex]


class IndexUnderTest:
    """A temporary collection holding the dataset's vectors under one index."""

    def __init__(self, scratch: ScratchIndex, spec: IndexSpec, vectors: np.ndarray) -> None:
        self.spec = spec
        self.scratch = scratch
        started = time.perf_counter()
        scratch.insert(vectors)
        refused = scratch.build_index(spec.index_type, spec.index_params(), BUILD_WAIT_S)
        if refused:
            scratch.drop()
            raise EvalError(f"{spec.index_type}: {refused}")
        self.build_seconds = time.perf_counter() - started

    def search(self, queries: np.ndarray, limit: int, depth: int) -> np.ndarray:
        """Ids of the `limit` best per query, -1 where the index returned fewer."""
        return self.scratch.search_batch(queries, limit, self.spec.search_params(depth))

    def drop(self) -> None:
        self.scratch.drop()


def leave_one_out_rankings(found: np.ndarray, depth: int) -> np.ndarray:
    """Each query's results without itself (row i is query i), cut to `depth`."""
    rankings = np.full((len(found), depth), -1, dtype=np.int64)
    for i, row in enumerate(found):
        kept = row[(row != i) & (row >= 0)][:depth]
        rankings[i, : len(kept)] = kept
    return rankings


def report_of(rankings: np.ndarray, labels: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    missing = rankings < 0
    relevant, totals = judge(np.where(missing, 0, rankings), labels, np.arange(len(labels)))
    relevant &= ~missing  # a hole in an index's answer is never relevant
    return evaluate(relevant, totals, ks).as_dict()


RERANKINGS = ("none", "exact", "qe")


def evaluate_dataset(
    scratch: ScratchFactory,
    vectors: np.ndarray,
    labels: np.ndarray,
    specs: Sequence[IndexSpec],
    rerankings: Sequence[str] = RERANKINGS,
    depth: int | None = None,
    ks: Sequence[int] = (1, 5, 10, 100),
    qe_n: int = 5,
    qe_alpha: float = 3.0,
) -> list[dict[str, Any]]:
    """One record per index and re-ranking, each with every metric."""
    count = len(vectors)
    depth = min(depth or count - 1, count - 1, MILVUS_MAX_TOPK - 1)
    records: list[dict[str, Any]] = []
    for spec in specs:
        index: IndexUnderTest | None = None
        started = time.perf_counter()
        search: Callable[[np.ndarray], np.ndarray]
        if spec.index_type == "exhaustive":
            search = exhaustive_search(vectors, depth + 1)
            build_seconds = 0.0
        else:
            index = IndexUnderTest(scratch(int(vectors.shape[1])), spec, vectors)
            build_seconds = index.build_seconds
            search = partial(index.search, limit=depth + 1, depth=depth + 1)

        try:
            first = leave_one_out_rankings(search(vectors), depth)
            search_seconds = time.perf_counter() - started - build_seconds
            for reranking in rerankings:
                if reranking == "none":
                    rankings = first
                elif reranking == "exact":
                    rankings, _ = rescore(vectors, first, vectors)
                elif reranking == "qe":
                    expanded = alpha_query_expansion(
                        vectors, np.where(first < 0, 0, first), vectors, qe_n, qe_alpha
                    )
                    rankings = leave_one_out_rankings(search(expanded), depth)
                else:
                    raise EvalError(f"unknown re-ranking {reranking!r}: {', '.join(RERANKINGS)}")
                records.append(
                    {
                        "index": spec.label,
                        "index_type": spec.index_type,
                        "build_params": spec.build,
                        "search_params": spec.search,
                        "rerank": reranking,
                        "depth": depth,
                        "build_seconds": round(build_seconds, 2),
                        "search_seconds": round(search_seconds, 2),
                        **report_of(rankings, labels, ks),
                    }
                )
        finally:
            if index is not None:
                index.drop()
    return records


def exhaustive_search(vectors: np.ndarray, limit: int) -> Callable[[np.ndarray], np.ndarray]:
    def search(queries: np.ndarray) -> np.ndarray:
        scores = queries @ vectors.T
        return np.argsort(-scores, axis=1, kind="stable")[:, :limit]

    return search


def exhaustive_map(vectors: np.ndarray, labels: np.ndarray) -> float:
    """The full-ranking leave-one-out mAP (the reference figure)."""
    rankings = exhaustive_rankings(vectors)
    relevant, totals = judge(rankings, labels, np.arange(len(labels)))
    return evaluate(relevant, totals, (1,)).mean_average_precision
