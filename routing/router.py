"""Router: categorize a task vector against a taxonomy's examples, or abstain when nothing fits.

Two signals decide:
- confidence: a softmax-regression head over the (frozen, L2-normalized) example vectors gives each category
  a probability; the best category must be confident enough;
- familiarity: the mean cosine similarity of the text to its nearest examples of any category must be high
  enough. A request unlike anything we have examples of is out of scope even if the head is sure.
Both thresholds are fitted from the examples alone: some categories are held out entirely and play
"a kind of request we have no route for" (pseudo out-of-scope), and some examples of the others are held
out as in-scope evidence. No evaluation case is ever used for fitting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCALE = 20.0  # logit scale for unit vectors: cosine in [-1, 1] -> logits in [-20, 20]
# A taxonomy of one or two categories abstains on requests less familiar than this share of its own examples
# (each left out in turn): Router.familiarity_floor.
FLOOR_QUANTILE = 0.05


@dataclass(frozen=True, slots=True)
class Decision:
    abstain: bool
    categories: list[tuple[str, float]]  # primary first, then secondary categories; scores are probabilities
    ranking: list[tuple[str, float]]  # the top categories considered, best first
    threshold: float  # confidence needed: the probability mass of the reported categories
    similarity: float = 0.0  # familiarity of the text: mean cosine to its nearest examples
    similarity_threshold: float = 0.0
    nearest_examples: list[tuple[str, str, float]] = field(default_factory=list)  # (slug, text, similarity)
    # below the familiarity threshold (compared unrounded: the two reported numbers may round to the same)
    unfamiliar: bool = False

    @property
    def primary(self) -> str | None:
        return None if self.abstain else self.categories[0][0]


@dataclass(frozen=True, slots=True)
class Holdout:
    train: np.ndarray  # boolean masks over the examples
    in_scope: np.ndarray
    out_of_scope: np.ndarray
    remap: np.ndarray  # category index -> index among the kept categories (-1: held out)
    n_kept: int


@dataclass(frozen=True, slots=True)
class HoldoutScores:
    in_conf: np.ndarray
    in_sim: np.ndarray
    in_ok: np.ndarray  # the held-out in-scope example's best category was right
    oos_conf: np.ndarray
    oos_sim: np.ndarray

    @classmethod
    def concat(cls, parts: list[HoldoutScores]) -> HoldoutScores:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__slots__))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_softmax(x: np.ndarray, y: np.ndarray, n_classes: int, iters: int = 300, l2: float = 1e-4,
                lr: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch Adam. Deterministic (zero init), numpy only."""
    n, dim = x.shape
    w = np.zeros((dim, n_classes), dtype=np.float32)
    b = np.zeros(n_classes, dtype=np.float32)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    xs = np.ascontiguousarray(x * SCALE, dtype=np.float32)
    state = [(np.zeros_like(w), np.zeros_like(w)), (np.zeros_like(b), np.zeros_like(b))]
    for step in range(1, iters + 1):
        grad = (_softmax(xs @ w + b) - onehot) / n
        for param, g, (m, v) in ((w, xs.T @ grad + l2 * w, state[0]), (b, grad.sum(axis=0), state[1])):
            m *= 0.9
            m += 0.1 * g
            v *= 0.999
            v += 0.001 * g * g
            param -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return w, b


def best_first(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the columns of the ``k`` highest scores, highest first, ties in column order: exactly
    ``np.argsort(-scores, axis=1, kind="stable")[:, :k]``, without sorting whole rows. A routing batch's rows
    hold a score per taxonomy example, tens of thousands once staff feedback has added examples: sorting them
    took 101 ms for 64 rows of 15,350, more than routing the batch."""
    n = scores.shape[1]
    if k <= 0 or n == 0:
        return np.zeros((len(scores), 0), dtype=np.int64)
    if k >= n:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # each row's k-th highest score
    out = np.empty((len(scores), k), dtype=np.int64)
    for r in range(len(scores)):
        candidates = np.flatnonzero(scores[r] >= kth[r])  # at least k, in column order
        out[r] = candidates[np.argsort(-scores[r, candidates], kind="stable")[:k]]
    return out


class Router:
    def __init__(self, secondary_ratio: float = 0.5, min_secondary: float = 0.15, max_secondary: int = 2,
                 neighbours: int = 5, oos_target: float = 0.5, holdout_rounds: int = 3, seed: int = 0) -> None:
        """``secondary_ratio``: a second category is reported when its probability is at least this share
        of the primary's (and at least ``min_secondary``); 0 disables secondary categories.
        ``oos_target``: the share of held-out categories the fitted thresholds must reject."""
        self.secondary_ratio = secondary_ratio
        self.min_secondary = min_secondary
        self.max_secondary = max_secondary
        self.neighbours = neighbours
        self.oos_target = oos_target
        self.holdout_rounds = holdout_rounds
        self.seed = seed
        self.threshold = 0.0
        self.similarity_threshold = -1.0
        self.labels: list[str] = []
        self._examples = np.zeros((0, 0), dtype=np.float32)
        self._example_texts: list[str] = []
        self._example_label = np.zeros(0, dtype=np.int64)
        self._w = np.zeros((0, 0), dtype=np.float32)
        self._b = np.zeros(0, dtype=np.float32)

    # -- fitting ---------------------------------------------------------------------------------------
    def fit(self, labels: list[str], vectors: np.ndarray, texts: list[str] | None = None,
            thresholds: tuple[float, float] | None = None, head: np.ndarray | None = None) -> Router:
        """``thresholds``: (confidence, familiarity) fitted elsewhere (routing.tuned calibrates a fine-tuned
        encoder on its own held-out run); by default they are calibrated here from the examples.
        ``head``: (n_categories, dim) unit rows of a cosine head trained with the encoder (categories in sorted
        order), used instead of fitting a softmax head here."""
        if len(labels) != len(vectors):
            raise ValueError("labels and vectors differ in length")
        if texts is not None and len(texts) != len(labels):
            raise ValueError("labels and texts differ in length")
        if not labels:
            raise ValueError("cannot fit a router without examples")
        vectors = np.asarray(vectors, dtype=np.float32)
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self.labels = sorted(set(labels))
        index = {slug: i for i, slug in enumerate(self.labels)}
        self._example_label = np.array([index[s] for s in labels], dtype=np.int64)
        self._examples = np.ascontiguousarray(vectors)
        self._example_texts = list(texts) if texts is not None else [""] * len(labels)
        if head is not None:
            if head.shape != (len(self.labels), vectors.shape[1]):
                raise ValueError("head must have one row per category")
            self._w = np.ascontiguousarray(head.T, dtype=np.float32)
            self._b = np.zeros(len(self.labels), dtype=np.float32)
        else:
            self._w, self._b = fit_softmax(self._examples, self._example_label, len(self.labels))
        self.threshold, self.similarity_threshold = thresholds if thresholds is not None else self._calibrate()
        return self

    def _familiarity(self, sims: np.ndarray) -> np.ndarray:
        k = min(self.neighbours, sims.shape[1])
        return -np.partition(-sims, k - 1, axis=1)[:, :k].mean(axis=1)

    def holdout(self, y: np.ndarray, n_classes: int, rng: np.random.Generator) -> Holdout:
        """Hold out a fifth of the categories (pseudo out-of-scope) and a fifth of the other examples."""
        held = rng.choice(n_classes, size=max(1, n_classes // 5), replace=False)
        is_held = np.isin(y, held)
        val = rng.random(len(y)) < 0.2
        # A kept category keeps at least one example to learn from (its first, if the draw took them all): an
        # example of a category the holdout fit never saw is not in-scope evidence. With a few examples per
        # category (``--shots 1`` or 2) the draw often takes all of them; with one, that one always stays.
        learned = np.bincount(y[~is_held & ~val], minlength=n_classes) > 0
        categories, first = np.unique(y, return_index=True)
        val[first[~learned[categories] & ~np.isin(categories, held)]] = False
        kept = np.setdiff1d(np.arange(n_classes), held)
        remap = np.full(n_classes, -1)
        remap[kept] = np.arange(len(kept))
        return Holdout(train=~is_held & ~val, in_scope=~is_held & val, out_of_scope=is_held, remap=remap,
                       n_kept=len(kept))

    def holdout_scores(self, vectors: np.ndarray, y: np.ndarray, split: Holdout,
                       head: np.ndarray | None = None) -> HoldoutScores:
        """Fit a head on the split's training part (or take the given cosine head, one row per kept category);
        score the held-out in-scope and out-of-scope parts."""
        train = vectors[split.train]
        if head is not None:
            w, b = head.T, np.zeros(split.n_kept, dtype=np.float32)
        else:
            w, b = fit_softmax(train, split.remap[y[split.train]], split.n_kept)
        parts = []
        for mask in (split.in_scope, split.out_of_scope):
            v = vectors[mask]
            probs = _softmax(SCALE * v @ w + b)
            parts.append((self._confidence(probs), self._familiarity(v @ train.T), probs.argmax(axis=1)))
        (ic, isim, pred), (oc, osim, _) = parts
        return HoldoutScores(ic, isim, pred == split.remap[y[split.in_scope]], oc, osim)

    def _calibrate(self) -> tuple[float, float]:
        n_classes = len(self.labels)
        if n_classes < 3:  # too few categories to hold any out
            return 0.0, self.familiarity_floor()
        rng = np.random.default_rng(self.seed)
        scores = []
        for _ in range(self.holdout_rounds):
            split = self.holdout(self._example_label, n_classes, rng)
            if split.train.any() and split.out_of_scope.any():
                scores.append(self.holdout_scores(self._examples, self._example_label, split))
        if not scores:
            return 0.0, self.familiarity_floor()
        return self.choose_thresholds(HoldoutScores.concat(scores))

    def familiarity_floor(self) -> float:
        """The familiarity threshold of a taxonomy with too few categories to hold any out (one or two): the
        familiarity that all but ``FLOOR_QUANTILE`` of the examples reach among the other examples (each left
        out in turn). Confidence cannot tell anything apart there (with one category it is always 1), so this
        is what keeps a request unlike every example (spam, another trade) from being routed. -1 (no floor)
        with a single example."""
        n = len(self._examples)
        if n < 2:
            return -1.0
        left_out = np.empty(n, dtype=np.float32)
        for start in range(0, n, 1024):  # a block of rows at a time: n x n similarities can be large
            rows = np.arange(start, min(start + 1024, n))
            sims = self._examples[rows] @ self._examples.T
            others = np.ones_like(sims, dtype=bool)
            others[np.arange(len(rows)), rows] = False  # each example left out of its own neighbours
            left_out[rows] = self._familiarity(sims[others].reshape(len(rows), n - 1))
        return float(np.quantile(left_out, FLOOR_QUANTILE))

    def choose_thresholds(self, s: HoldoutScores) -> tuple[float, float]:
        """The (confidence, familiarity) thresholds that keep the most held-out in-scope examples right
        while rejecting at least ``oos_target`` of the examples of held-out categories.

        Without in-scope evidence (every kept category had a single example, so none could be held out), the
        lowest confidence threshold that still rejects ``oos_target`` of the held-out categories' examples.
        """
        if not len(s.in_conf):
            must_reject = int(np.ceil(self.oos_target * len(s.oos_conf)))  # 0 when nothing was held out
            if not must_reject:
                return 0.0, -1.0
            return float(np.nextafter(np.sort(s.oos_conf)[must_reject - 1], np.inf)), -1.0
        best = ((-1.0, -1.0), 0.0, -1.0)
        # Lexicographic: keep the most in-scope examples right; among equals, reject the most out-of-scope.
        for t_conf in np.unique(np.round(np.concatenate([[0.0], s.oos_conf, s.in_conf]), 2)):
            for t_sim in np.unique(np.round(np.concatenate([[-1.0], s.oos_sim, s.in_sim]), 2)):
                rejected = float(((s.oos_conf < t_conf) | (s.oos_sim < t_sim)).mean())
                if rejected < self.oos_target:
                    continue
                kept_right = round(float((s.in_ok & (s.in_conf >= t_conf) & (s.in_sim >= t_sim)).mean()), 3)
                if (kept_right, rejected) > best[0]:
                    best = ((kept_right, rejected), float(t_conf), float(t_sim))
        return best[1], best[2]

    def _chosen(self, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(order, how many leading categories are reported) for rows of probabilities.

        A request that spans two categories splits the probability between them; the confidence that
        decides abstention is the mass of the categories reported, not the first one alone.
        """
        order = np.argsort(-probs, axis=-1, kind="stable")
        top = np.take_along_axis(probs, order, axis=-1)
        count = np.ones(probs.shape[:-1], dtype=np.int64)
        if self.secondary_ratio > 0:
            floor = np.maximum(self.min_secondary, self.secondary_ratio * top[..., 0])
            for j in range(1, min(1 + self.max_secondary, probs.shape[-1])):
                count += (top[..., j] >= floor) & (count == j)
        return order, count

    @staticmethod
    def _reported_mass(top: np.ndarray, count: np.ndarray) -> np.ndarray:
        """The probability of the ``count`` leading categories, for rows of probabilities sorted best first."""
        mask = np.arange(top.shape[-1]) < count[..., None]
        return (top * mask).sum(axis=-1)

    def _confidence(self, probs: np.ndarray) -> np.ndarray:
        order, count = self._chosen(probs)
        return self._reported_mass(np.take_along_axis(probs, order, axis=-1), count)

    # -- saving ----------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """What a fitted router is made of: arrays, and JSON-able facts (routing.tuned saves both)."""
        arrays = {"w": self._w, "b": self._b, "examples": self._examples, "example_label": self._example_label}
        meta = {"labels": self.labels, "texts": self._example_texts, "threshold": self.threshold,
                "similarity_threshold": self.similarity_threshold}
        return arrays, meta

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Router:
        self._w, self._b = arrays["w"], arrays["b"]
        self._examples, self._example_label = arrays["examples"], arrays["example_label"]
        self.labels, self._example_texts = list(meta["labels"]), list(meta["texts"])
        self.threshold, self.similarity_threshold = float(meta["threshold"]), float(meta["similarity_threshold"])
        if len(self._example_texts) != len(self._examples) or self._w.shape[1] != len(self.labels):
            raise ValueError("inconsistent router state")
        return self

    # -- deciding --------------------------------------------------------------------------------------
    def scores(self, vector: np.ndarray) -> np.ndarray:
        """Probability per category (in ``self.labels`` order)."""
        if not self.labels:
            raise RuntimeError("router is not fitted")
        return self._probabilities(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]

    def _probabilities(self, rows: np.ndarray) -> np.ndarray:
        return _softmax(SCALE * rows @ self._w + self._b)

    def decide(self, vector: np.ndarray, n_ranking: int = 5, n_nearest: int = 3) -> Decision:
        return self.decide_many(np.asarray(vector, dtype=np.float32).reshape(1, -1), n_ranking, n_nearest)[0]

    def decide_many(self, vectors: np.ndarray, n_ranking: int = 5, n_nearest: int = 3) -> list[Decision]:
        """:meth:`decide` for each row of ``vectors``, with the array work done once for all of them (a
        routing batch decides dozens of tasks; per-row numpy calls cost more than the arithmetic)."""
        if not self.labels:
            raise RuntimeError("router is not fitted")
        if len(vectors) == 0:
            return []
        v = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
        probs = self._probabilities(v)
        sims = v @ self._examples.T
        familiarity = self._familiarity(sims)
        order, count = self._chosen(probs)
        top = np.take_along_axis(probs, order, axis=1)
        confidence = self._reported_mass(top, count)
        nearest_idx = best_first(sims, n_nearest)
        nearest_sims = np.take_along_axis(sims, nearest_idx, axis=1)
        threshold, similarity_threshold = round(self.threshold, 4), round(self.similarity_threshold, 4)
        labels, texts, example_label = self.labels, self._example_texts, self._example_label

        def leading(r: int, k: int) -> list[tuple[str, float]]:  # row r's k best categories and probabilities
            return [(labels[i], round(p, 4))
                    for i, p in zip(order[r, :k].tolist(), top[r, :k].tolist(), strict=True)]

        decisions = []
        for r in range(len(v)):
            fam = float(familiarity[r])
            unfamiliar = fam < self.similarity_threshold
            abstain = unfamiliar or float(confidence[r]) < self.threshold
            decisions.append(Decision(
                abstain, [] if abstain else leading(r, int(count[r])), leading(r, n_ranking), threshold,
                round(fam, 4), similarity_threshold,
                [(labels[example_label[i]], texts[i], round(sim, 4))
                 for i, sim in zip(nearest_idx[r].tolist(), nearest_sims[r].tolist(), strict=True)],
                unfamiliar,
            ))
        return decisions
