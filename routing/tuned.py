"""A routing model: the encoder that turns a task into a vector, and the Router that decides on it.

Two kinds, chosen with ``fit_routing_model(tune=...)``:

* frozen: the shared base encoder and a Router head over its vectors. Fits in seconds.
* tuned: the encoder's top layers are fine-tuned on the taxonomy's examples (models.tuning), then a Router
  head is fitted over the tuned vectors. Better separated categories (CLINC150 dev: ~97 % top-1 against
  ~95.7 % frozen), at the cost of minutes of fitting.

Calibration must not look at the examples the encoder was tuned on: a tuned encoder is sure about its own
training examples, so thresholds read from them would never abstain. The tuned fit therefore first tunes
without a fifth of the categories and a fifth of the remaining examples, and the thresholds are read from how
that encoder and head score the held-out parts (a small taxonomy: up to three such runs, each holding out
other categories, ``calibration_rounds``); then once on everything, which is what decides.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from routing.router import Decision, HoldoutScores, Router

if TYPE_CHECKING:  # models.tuning imports torch: only a tuned fit loads it
    from models.tuning import TuningConfig

log = logging.getLogger(__name__)

# Bump when fitting changes in a way that makes saved models stale: it is part of the fingerprint.
FIT_VERSION = "2"
MIN_TUNING_CATEGORIES = 5  # fewer categories leave too little to hold out for calibration
# Fine-tuning on a handful of examples per category overfits them. clinc150-dev with K examples per route
# (routing.evaluate --shots K), in-scope % / OOS recall %, frozen against tuned: K=1 56.4 / 82 against
# 51.1 / 59, K=2 70.1 / 87 against 62.1 / 88, K=5 82.3 / 80 against 83.2 / 71; K=10 87.1 / 82 against
# 86.6 / 92 and K=20 89.2 / 87 against 92.2 / 72 (mixed); all 100: 92.7 / 81 against 96.4 / 85
# (bench/README.md, "Few examples per route").
MIN_TUNING_EXAMPLES = 10  # per category, the median over categories


# Tuning steps the calibration runs of one fit may take together. Which fifth of the categories a run holds
# out moves the thresholds a lot when a taxonomy is small (clinc150-dev --shots 20: out-of-scope recall 72 %
# from one run), and a small taxonomy's run is short, so it gets up to ``Router.holdout_rounds`` runs, each
# holding out other categories, as the frozen router does. A CLINC150-sized taxonomy (~1,200 steps a run)
# keeps one.
CALIBRATION_STEPS = 1500


def calibration_rounds(n_examples: int, config: TuningConfig, most: int) -> int:
    """How many calibration runs a tuned fit of ``n_examples`` examples makes (1 .. ``most``)."""
    from models.tuning import tuning_steps

    # A run learns from about 0.8 x 0.8 of the examples (a fifth of the categories, a fifth of the rest out).
    return max(1, min(most, CALIBRATION_STEPS // tuning_steps(int(0.64 * n_examples), config)))


def tunable(examples_per_category: list[int]) -> bool:
    """Whether a taxonomy with these example counts gets a fine-tuned encoder (else the frozen one)."""
    return (len(examples_per_category) >= MIN_TUNING_CATEGORIES
            and float(np.median(examples_per_category)) >= MIN_TUNING_EXAMPLES)


@dataclass
class RoutingModel:
    encoder: Any  # models.Encoder (base or tuned)
    router: Router
    tuned: bool
    fingerprint: str
    fit_seconds: float = 0.0
    overrides: dict[str, np.ndarray] | None = None

    @property
    def model_id(self) -> str:
        return str(self.encoder.model_id)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts)

    def decide(self, text: str, vector: np.ndarray | None = None) -> Decision:
        """``vector``: the text's vector from this model's encoder, if the caller has it already."""
        return self.decide_many([text], None if vector is None else np.asarray(vector).reshape(1, -1))[0]

    def decide_many(self, texts: list[str], vectors: np.ndarray | None = None) -> list[Decision]:
        """:meth:`decide` for several texts, with one encoder pass for all of them. ``vectors``: theirs from
        this model's encoder (``self.encoder``), if the caller has them (a routing batch ranks providers with
        the same vectors)."""
        if not texts:
            return []
        return self.router.decide_many(self.encoder.encode(texts) if vectors is None else vectors)

    # -- persistence (tuned models only: a frozen one refits in seconds) ----------------------------------
    def save(self, path: Path) -> None:
        from models.onnx_backend import write_atomically

        if self.overrides is None:
            raise ValueError("only tuned routing models are saved")
        router_arrays, meta = self.router.state()
        arrays = {f"override/{k}": v for k, v in self.overrides.items()}
        arrays.update({f"router/{k}": v for k, v in router_arrays.items()})
        meta.update({"fingerprint": self.fingerprint, "fit_seconds": self.fit_seconds})
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        # another worker process may be saving the same version at this moment: the cache is shared
        write_atomically(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path, base_encoder: Any, router: Router | None = None) -> RoutingModel:
        from models.tuning import tuned_encoder

        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            overrides = {k.removeprefix("override/"): data[k] for k in data.files if k.startswith("override/")}
            r = (router or Router()).restore(
                {k.removeprefix("router/"): data[k] for k in data.files if k.startswith("router/")}, meta
            )
        encoder = tuned_encoder(base_encoder, overrides, meta["fingerprint"][:12])
        return cls(encoder, r, True, meta["fingerprint"], float(meta["fit_seconds"]), overrides)


def fingerprint(labels: list[str], texts: list[str], base_encoder: Any, tune: bool, config: Any = None) -> str:
    """Names a fit: same examples, encoder, backend and settings give the same fingerprint. The encoder counts by
    its weights and how its graph is built (``build_key``), not only its name: a saved tuned model's layers sit
    on the base encoder's lower layers, so new weights or a new graph builder need a new fit."""
    h = hashlib.sha256()
    for part in (FIT_VERSION, str(getattr(base_encoder, "model_id", "")), str(getattr(base_encoder, "backend", "")),
                 str(getattr(base_encoder, "build_key", "")), str(tune), repr(config)):
        h.update(part.encode() + b"\0")
    for label, text in sorted(zip(labels, texts, strict=True)):
        h.update(label.encode() + b"\x1f" + text.encode() + b"\x1e")
    return h.hexdigest()


def fit_routing_model(
    labels: list[str],
    texts: list[str],
    base_encoder: Any,
    quotable: list[str] | None = None,
    tune: bool = True,
    config: Any = None,
    router: Router | None = None,
) -> RoutingModel:
    """Fit a routing model on a taxonomy's examples (``labels[i]`` is the category of ``texts[i]``).

    ``quotable``: the example texts a decision may quote as nearest examples ("" for ones it must not).
    Falls back to a frozen model when the taxonomy is too small to calibrate a tuned one, or has too few
    examples per category for tuning to pay (``tunable``).
    """
    if len(labels) != len(texts) or not labels:
        raise ValueError("need one category per example, and at least one example")
    quotable = list(quotable) if quotable is not None else list(texts)
    router = router or Router()
    n_classes = len(set(labels))
    start = time.perf_counter()
    if not tune or not tunable(list(Counter(labels).values())):
        router.fit(labels, base_encoder.encode(texts), quotable)
        return RoutingModel(base_encoder, router, False, fingerprint(labels, texts, base_encoder, False),
                            time.perf_counter() - start)

    from models.tuning import LayerStates, TuningConfig, frozen_layers, tune_top_layers, tuned_encoder

    config = config or TuningConfig()
    key = fingerprint(labels, texts, base_encoder, True, config)
    slugs = sorted(set(labels))
    y = _indices(labels, slugs)
    states = LayerStates(base_encoder, frozen_layers(config))(texts)

    # 1. Calibration runs: tune without the held-out categories and examples, score what was held out.
    rng = np.random.default_rng(router.seed)
    rounds = calibration_rounds(len(texts), config, router.holdout_rounds)
    parts = []
    for _ in range(rounds):
        split = router.holdout(y, n_classes, rng)
        train_rows = np.flatnonzero(split.train)
        overrides, head = tune_top_layers([states[i] for i in train_rows], split.remap[y[train_rows]],
                                          split.n_kept, config)
        probe = tuned_encoder(base_encoder, overrides, "calibration")
        parts.append(router.holdout_scores(probe.encode(texts), y, split, head=head))
    scores = HoldoutScores.concat(parts)
    thresholds = router.choose_thresholds(scores)
    kept = scores.in_ok & (scores.in_conf >= thresholds[0]) & (scores.in_sim >= thresholds[1])
    log.info("tuned router: held-out in-scope kept right %s at thresholds %s (%d calibration run(s))",
             f"{kept.mean():.4f}" if len(kept) else "(no held-out in-scope examples)", thresholds, rounds)

    # 2. The model that decides: tuned on every example, with the thresholds read in step 1.
    overrides, head = tune_top_layers(states, y, n_classes, config)
    encoder = tuned_encoder(base_encoder, overrides, key[:12])
    router.fit(labels, encoder.encode(texts), quotable, thresholds=thresholds, head=head)
    return RoutingModel(encoder, router, True, key, time.perf_counter() - start, overrides)


def _indices(labels: list[str], slugs: list[str]) -> np.ndarray:
    index = {s: i for i, s in enumerate(slugs)}
    return np.array([index[s] for s in labels], dtype=np.int64)
