"""Route-decision latency (encode + categorize + rank providers) at 1k / 10k / 100k providers.

Baseline, measured in the same run: ranking from a list of provider records (arrays rebuilt on every call),
against ranking on a prebuilt ``ProviderIndex``. Providers are synthetic (random unit vectors, 1-3 of 25
categories); the encoder and router are the real ones, fitted on the demo taxonomy.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from decimal import Decimal
from importlib import resources

import numpy as np

from models import load_encoder
from routing import Matcher, ProviderRecord, Router
from routing.matcher import ProviderIndex

TEXTS = [
    "Build a responsive landing page for my bakery with an online order form.",
    "Reconcile six months of bank transactions in QuickBooks.",
    "Translate our employee handbook from English into Portuguese.",
    "Fix the leaking kitchen tap and replace the cartridge.",
]


def percentile(samples: list[float], q: float) -> float:
    return round(float(np.percentile(samples, q)), 2)


def main() -> None:
    taxonomy = json.loads(resources.files("marketplace.demo").joinpath("taxonomy.json").read_text())
    slugs = [c["slug"] for c in taxonomy["categories"]]
    labels = [c["slug"] for c in taxonomy["categories"] for _ in c["examples"]]
    examples = [e for c in taxonomy["categories"] for e in c["examples"]]
    encoder = load_encoder()
    router = Router().fit(labels, encoder.encode(examples), examples)
    matcher = Matcher()
    rng = np.random.default_rng(0)
    results: dict[str, object] = {"encoder_backend": getattr(encoder, "backend", "torch")}
    for n in (1_000, 10_000, 100_000):
        vectors = rng.standard_normal((n, encoder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        records = [
            ProviderRecord(f"p{i:06d}", vectors[i], frozenset(rng.choice(slugs, size=rng.integers(1, 4))),
                           capacity=int(rng.integers(1, 6)), load=int(rng.integers(0, 3)),
                           accepting_work=bool(rng.random() > 0.1), hourly_rate=Decimal(int(rng.integers(15, 150))))
            for i in range(n)
        ]
        index = ProviderIndex(records)

        def decide(text: str, use_index: bool, index: ProviderIndex = index, records: list = records) -> None:
            v = encoder.encode([text])[0]
            d = router.decide(v)
            cats = [s for s, _ in d.categories] or [d.ranking[0][0]]
            if use_index:
                matcher.rank_index(index, v, cats, budget=Decimal(500), limit=50)
            else:
                matcher.rank(v, cats, records, budget=Decimal(500), limit=50)

        timings: dict[bool, list[float]] = {True: [], False: []}
        for use_index in (True, False):
            gc.collect()  # each phase starts from a clean heap; the baseline allocates heavily
            for i in range(3):
                decide(TEXTS[i % len(TEXTS)], use_index)
            rounds = 40 if (use_index or n <= 10_000) else 10
            for i in range(rounds):
                t0 = time.perf_counter()
                decide(TEXTS[i % len(TEXTS)], use_index)
                timings[use_index].append((time.perf_counter() - t0) * 1000)
        results[f"{n}"] = {
            "baseline_p50_ms": percentile(timings[False], 50), "baseline_p99_ms": percentile(timings[False], 99),
            "index_p50_ms": percentile(timings[True], 50), "index_p99_ms": percentile(timings[True], 99),
            "speedup_p50": round(statistics.median(timings[False]) / statistics.median(timings[True]), 1),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
