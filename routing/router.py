"""Router: categorize a task vector against a taxonomy's examples, or abstain when nothing fits.

Scores are cosine similarities (vectors are L2-normalized). A category's score blends the similarity to its
centroid with the mean of the top-k similarities to its examples. The abstain threshold is fitted from the
examples alone: each example is scored with itself left out (in-scope evidence), and against the other
categories only (pseudo out-of-scope evidence: "a request of a kind we have no route for").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Decision:
    abstain: bool
    categories: list[tuple[str, float]]  # primary first, then secondary categories within the margin
    ranking: list[tuple[str, float]]  # the top categories considered, best first
    threshold: float
    nearest_examples: list[tuple[str, str, float]] = field(default_factory=list)  # (slug, text, similarity)

    @property
    def primary(self) -> str | None:
        return None if self.abstain else self.categories[0][0]


class Router:
    def __init__(self, top_k: int = 3, centroid_weight: float = 0.5, secondary_margin: float = 0.04,
                 max_secondary: int = 2) -> None:
        self.top_k = top_k
        self.centroid_weight = centroid_weight
        self.secondary_margin = secondary_margin
        self.max_secondary = max_secondary
        self.threshold = 0.0
        self.labels: list[str] = []
        self._examples: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self._example_texts: list[str] = []
        self._example_label: np.ndarray = np.zeros(0, dtype=np.int64)
        self._centroids: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        self._bounds: list[tuple[int, int]] = []

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, labels: list[str], vectors: np.ndarray, texts: list[str] | None = None) -> Router:
        if len(labels) != len(vectors):
            raise ValueError("labels and vectors differ in length")
        if not labels:
            raise ValueError("cannot fit a router without examples")
        order = np.argsort(np.array(labels, dtype=object), kind="stable")
        sorted_labels = [labels[i] for i in order]
        self._examples = np.ascontiguousarray(vectors[order], dtype=np.float32)
        self._example_texts = [texts[i] for i in order] if texts else [""] * len(labels)
        self.labels = sorted(set(labels))
        index = {slug: i for i, slug in enumerate(self.labels)}
        self._example_label = np.array([index[s] for s in sorted_labels], dtype=np.int64)
        self._bounds = []
        start = 0
        for i in range(len(self.labels)):
            end = start + int((self._example_label == i).sum())
            self._bounds.append((start, end))
            start = end
        centroids = np.stack([self._examples[a:b].mean(axis=0) for a, b in self._bounds])
        self._centroids = (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).astype(np.float32)
        self.threshold = self._calibrate()
        return self

    def _class_scores(self, sims: np.ndarray, centroid_sims: np.ndarray) -> np.ndarray:
        """sims: (m, n_examples) -> (m, n_classes) blended scores."""
        out = np.empty((sims.shape[0], len(self._bounds)), dtype=np.float32)
        for c, (a, b) in enumerate(self._bounds):
            block = sims[:, a:b]
            k = min(self.top_k, b - a)
            top = -np.partition(-block, k - 1, axis=1)[:, :k] if k < b - a else block
            out[:, c] = top.mean(axis=1)
        return self.centroid_weight * centroid_sims + (1 - self.centroid_weight) * out

    def _calibrate(self, chunk: int = 1024) -> float:
        own_scores, foreign_scores, correct = [], [], []
        n = len(self._examples)
        for start in range(0, n, chunk):
            rows = slice(start, min(n, start + chunk))
            sims = self._examples[rows] @ self._examples.T
            idx = np.arange(rows.start, rows.stop)
            sims[np.arange(len(idx)), idx] = -1.0  # leave the example itself out
            scores = self._class_scores(sims, self._examples[rows] @ self._centroids.T)
            own = self._example_label[rows]
            own_score = scores[np.arange(len(idx)), own]
            masked = scores.copy()
            masked[np.arange(len(idx)), own] = -np.inf
            foreign = masked.max(axis=1)
            own_scores.append(own_score)
            foreign_scores.append(foreign)
            correct.append(own_score > foreign)
        own_all = np.concatenate(own_scores)
        foreign_all = np.concatenate(foreign_scores)
        correct_all = np.concatenate(correct)
        # Choose the threshold that best separates "accepted and right" from "best foreign match".
        candidates = np.unique(np.round(np.concatenate([own_all, foreign_all]), 3))
        best_t, best = 0.0, -1.0
        for t in candidates:
            accept_rate = float(((own_all >= t) & correct_all).mean())
            reject_rate = float((foreign_all < t).mean())
            score = 0.5 * accept_rate + 0.5 * reject_rate
            if score > best:
                best, best_t = score, float(t)
        return best_t

    # -- deciding --------------------------------------------------------------------------------------
    def scores(self, vector: np.ndarray) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return self._class_scores(v @ self._examples.T, v @ self._centroids.T)[0]

    def decide(self, vector: np.ndarray, n_ranking: int = 5, n_nearest: int = 3) -> Decision:
        if not self.labels:
            raise RuntimeError("router is not fitted")
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        scores = self.scores(v)
        order = np.argsort(-scores)
        ranking = [(self.labels[i], round(float(scores[i]), 4)) for i in order[:n_ranking]]
        best = float(scores[order[0]])
        abstain = best < self.threshold
        chosen: list[tuple[str, float]] = []
        if not abstain:
            chosen = [ranking[0]]
            for slug, score in ranking[1: 1 + self.max_secondary]:
                if score >= self.threshold and best - score <= self.secondary_margin:
                    chosen.append((slug, score))
        sims = self._examples @ v
        nearest_idx = np.argsort(-sims)[:n_nearest]
        nearest = [(self.labels[self._example_label[i]], self._example_texts[i], round(float(sims[i]), 4))
                   for i in nearest_idx]
        return Decision(abstain, chosen, ranking, round(self.threshold, 4), nearest)
