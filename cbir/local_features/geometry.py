"""Spatial verification: match two images' local features, then find how many matches one
geometric transform explains (RANSAC). Many inliers mean the same object or scene seen
again; unrelated images get a handful at most, since chance matches agree on no transform.

Matching keeps a query keypoint's nearest neighbour when it is clearly nearer than the second
(Lowe's ratio test) and, of several query keypoints matching one candidate keypoint, the
nearest. The transform is a 2-D affine map (6 degrees of freedom: rotation, scale, shear and
translation, which covers crops, rotations, rescaling and moderate perspective), estimated by
OpenCV's `estimateAffine2D` with RANSAC and refined on its inliers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from cbir.local_features.features import DIM, LocalFeatures

MIN_MATCHES = 4  # fewer cannot confirm anything (3 points fit any affine map exactly)


@dataclass(frozen=True)
class Verification:
    matches: int  # tentative correspondences after the ratio test
    inliers: int  # those the transform explains
    transform: np.ndarray | None  # 2 x 3 affine map, query -> candidate; None when none found
    # the smaller of the two shares of image area the inliers' convex hulls cover: a
    # near-duplicate shares most of the picture, a logo or a window's title bar a sliver
    coverage: float = 0.0


@dataclass(frozen=True)
class Verifier:
    ratio: float = 0.8  # Lowe's ratio test
    threshold: float = 0.02  # RANSAC's reprojection error, a share of the candidate's longer side
    iterations: int = 2000
    confidence: float = 0.995
    # fewer tentative matches than this cannot reach a verifying inlier count: RANSAC is not
    # run (it would spend all its iterations on chance matches), inliers reported 0
    min_matches: int = 8
    # also match the query mirrored (a flipped copy is the same photograph; SIFT is not
    # mirror-invariant): the better of the two counts
    mirror: bool = True

    def match(
        self,
        query: LocalFeatures,
        candidate: LocalFeatures,
        similarity: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tentative correspondences: (m, 2) query points and the (m, 2) candidate points.
        `similarity`: their descriptors' inner products, when already computed."""
        empty = np.zeros((0, 2), np.float32)
        if len(query) < 2 or len(candidate) < 2:
            return empty, empty
        # RootSIFT vectors are unit length: squared distance = 2 - 2 x inner product
        if similarity is None:
            similarity = query.rootsift() @ candidate.rootsift().T
        else:
            similarity = similarity.copy()
        rows = np.arange(len(similarity))
        first = similarity.argmax(1)
        best = similarity[rows, first]
        similarity[rows, first] = -np.inf
        second = similarity.max(1)
        d1 = np.sqrt(np.maximum(2 - 2 * best, 0))
        d2 = np.sqrt(np.maximum(2 - 2 * second, 0))
        passed = np.flatnonzero(d1 < self.ratio * d2)
        if not len(passed):
            return empty, empty
        # one query keypoint per candidate keypoint: the nearest of those matching it
        order = passed[np.argsort(d1[passed], kind="stable")]
        _, unique = np.unique(first[order], return_index=True)
        kept = order[unique]
        return query.points[kept], candidate.points[first[kept]]

    def verify(
        self, query: LocalFeatures, candidate: LocalFeatures, mirror: bool | None = None
    ) -> Verification:
        """`mirror` overrides the verifier's own setting for this pair."""
        found = self._verified(query, candidate)
        if (self.mirror if mirror is None else mirror) and found.inliers < self.min_matches * 4:
            flipped = self._verified(query.mirrored(), candidate)
            if flipped.inliers > found.inliers:
                return flipped
        return found

    def verify_many(
        self,
        query: LocalFeatures,
        candidates: Sequence[LocalFeatures],
        mirror: Sequence[bool],
        at_least: int,
    ) -> list[Verification]:
        """`verify` of each candidate (with `mirror[i]`), for a caller that only needs to
        know whether one reaches `at_least` inliers: the descriptors are compared in one
        product for all candidates, and a candidate whose tentative matches cannot reach
        `at_least` (inliers are a subset of them) gets its count of matches and no inliers,
        without RANSAC. Those that can are verified exactly as `verify` does."""
        found = self._bounded(query, candidates, at_least)
        retry = [i for i, f in enumerate(found) if mirror[i] and f.inliers < self.min_matches * 4]
        if retry:
            flipped = self._bounded(query.mirrored(), [candidates[i] for i in retry], at_least)
            for i, other in zip(retry, flipped, strict=True):
                if other.inliers > found[i].inliers:
                    found[i] = other
        return found

    def _bounded(
        self, query: LocalFeatures, candidates: Sequence[LocalFeatures], at_least: int
    ) -> list[Verification]:
        if not candidates:
            return []
        if len(query) < 2:
            return [Verification(0, 0, None) for _ in candidates]
        # the candidates' descriptors side by side, padded to the longest
        sizes = np.array([len(c) for c in candidates])
        width = max(int(sizes.max()), 2)
        padded = np.zeros((len(candidates), width, DIM), np.float32)
        for i, candidate in enumerate(candidates):
            padded[i, : sizes[i]] = candidate.rootsift()
        similarity = (query.rootsift() @ padded.reshape(-1, DIM).T).reshape(
            len(query), len(candidates), width
        )
        similarity[:, np.arange(width)[None, :] >= sizes[:, None]] = -np.inf
        bound = self._ratio_passes(similarity)
        bound[sizes < 2] = 0
        needed = max(at_least, MIN_MATCHES, self.min_matches)
        out = []
        for i, candidate in enumerate(candidates):
            if bound[i] < needed:
                out.append(Verification(int(bound[i]), 0, None))
                continue
            block = similarity[:, i, : sizes[i]]
            out.append(self._verified(query, candidate, block))
        return out

    def _ratio_passes(self, similarity: np.ndarray) -> np.ndarray:
        """Per candidate (axis 1 of the query x candidate x keypoint products), the query
        keypoints passing the ratio test: an upper bound of its tentative matches (the
        one-per-candidate-keypoint rule only removes some)."""
        first = similarity.argmax(axis=2)
        best = np.take_along_axis(similarity, first[..., None], axis=2)[..., 0]
        np.put_along_axis(similarity, first[..., None], -np.inf, axis=2)
        second = similarity.max(axis=2)
        np.put_along_axis(similarity, first[..., None], best[..., None], axis=2)  # restored
        d1 = np.sqrt(np.maximum(2 - 2 * best, 0))
        d2 = np.sqrt(np.maximum(2 - 2 * second, 0))
        passed: np.ndarray = (d1 < self.ratio * d2).sum(axis=0)
        return passed

    def _verified(
        self,
        query: LocalFeatures,
        candidate: LocalFeatures,
        similarity: np.ndarray | None = None,
    ) -> Verification:
        source, target = self.match(query, candidate, similarity)
        found, mask = self._fit(source, target, max(candidate.width, candidate.height, 1))
        if mask is None or found.inliers < 3:
            return found
        coverage = min(
            _hull_share(source[mask], query.width * query.height),
            _hull_share(target[mask], candidate.width * candidate.height),
        )
        return Verification(found.matches, found.inliers, found.transform, coverage)

    def fit(self, source: np.ndarray, target: np.ndarray, side: int) -> Verification:
        """RANSAC on given correspondences (target pixels within `side`)."""
        return self._fit(source, target, side)[0]

    def _fit(
        self, source: np.ndarray, target: np.ndarray, side: int
    ) -> tuple[Verification, np.ndarray | None]:
        count = len(source)
        if count < max(MIN_MATCHES, self.min_matches):
            return Verification(count, 0, None), None
        transform, mask = cv2.estimateAffine2D(
            source.reshape(-1, 1, 2),
            target.reshape(-1, 1, 2),
            method=cv2.RANSAC,
            ransacReprojThreshold=max(1.0, self.threshold * side),
            maxIters=self.iterations,
            confidence=self.confidence,
            refineIters=10,
        )
        if transform is None or mask is None:
            return Verification(count, 0, None), None
        inliers = mask.reshape(-1).astype(bool)
        return Verification(count, int(inliers.sum()), transform), inliers


def _hull_share(points: np.ndarray, area: int) -> float:
    hull = cv2.convexHull(points.reshape(-1, 1, 2).astype(np.float32))
    return float(cv2.contourArea(hull)) / max(area, 1)
