"""Route-decision latency (encode + categorize + rank providers) at 1k / 10k / 100k providers.

Baseline, measured in the same run: ranking from a list of provider records (arrays rebuilt on every call),
against ranking on a prebuilt ``ProviderIndex``. Providers are synthetic (random unit vectors, 1-3 of 25
categories, rates in three currencies); the encoder and router are the real ones, fitted on the demo taxonomy.

The ranking is the routing batch's (``marketplace.domain.routing.services._pick_offers``): the task's customer
and the providers offered it before left out, the budget compared only with rates in its currency, the first
``MAX_STORED_CANDIDATES`` kept with full providers ranked behind the rest (stored for re-offers), and the
offers picked from them. The index is the one a worker ranks on between two reads of every profile: built,
then 1 % of the providers changed (``ProviderIndex.with_changes``: closed rows, a tail).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from decimal import Decimal
from importlib import resources

import numpy as np

from marketplace.domain.routing.services import MAX_STORED_CANDIDATES
from marketplace.settings import Settings
from models import load_encoder
from routing import Matcher, ProviderRecord, Router
from routing.matcher import ProviderIndex

CURRENCIES = ("USD", "USD", "USD", "EUR", "GBP")
CHANGED = 0.01  # share of the providers whose profiles changed since the index was built

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
    offers_per_task = Settings().offers_per_task
    rng = np.random.default_rng(0)
    results: dict[str, object] = {"encoder_backend": getattr(encoder, "backend", "torch")}
    for n in (1_000, 10_000, 100_000):
        vectors = rng.standard_normal((n, encoder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

        def record(i: int, vectors: np.ndarray = vectors) -> ProviderRecord:
            return ProviderRecord(
                f"p{i:06d}", vectors[i], frozenset(rng.choice(slugs, size=rng.integers(1, 4))),
                capacity=int(rng.integers(1, 6)), load=int(rng.integers(0, 3)),
                accepting_work=bool(rng.random() > 0.1), hourly_rate=Decimal(int(rng.integers(15, 150))),
                recent_offers=int(rng.integers(0, 20)), rating_sum=int(rng.integers(0, 50)),
                rating_count=int(rng.integers(0, 10)), rate_currency=str(rng.choice(CURRENCIES)))

        records = [record(i) for i in range(n)]
        changed = [record(int(i)) for i in rng.choice(n, size=max(1, int(n * CHANGED)), replace=False)]
        index = ProviderIndex(records).with_changes(changed)
        latest = {r.provider_id: r for r in changed}
        records = [latest.get(r.provider_id, r) for r in records]  # the same providers, as one list
        offered_before = {f"p{i:06d}" for i in rng.choice(n, size=3, replace=False)}

        def decide(text: str, use_index: bool, index: ProviderIndex = index, records: list = records,
                   offered_before: set[str] = offered_before) -> None:
            v = encoder.encode([text])[0]
            d = router.decide(v)
            cats = [s for s, _ in d.categories] or [d.ranking[0][0]]
            exclude = {"customer", *offered_before}
            if use_index:
                ranked = matcher.rank_index(index, v, cats, budget=Decimal(500), budget_currency="USD",
                                            exclude=exclude, limit=MAX_STORED_CANDIDATES, include_full=True)
                rows = [index.row_of[c.provider_id] for c in ranked]
                offers = [row for row in rows if index.load[row] < index.capacity[row]][:offers_per_task]
            else:
                ranked = matcher.rank(v, cats, records, budget=Decimal(500), budget_currency="USD",
                                      exclude=exclude, limit=MAX_STORED_CANDIDATES, include_full=True)
                offers = [c for c in ranked if c.components["availability"] > 0][:offers_per_task]
            assert offers, "no provider picked: the bench would time an empty ranking"

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
