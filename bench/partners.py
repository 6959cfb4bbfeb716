"""Assisting-partner suggestions for one routing batch (64 tasks, each in one category) at 5,000 and 20,000
active partners in 25 categories (1 - 10 each, as the API allows).

Baseline, measured in the same run: ``Matcher.suggest_partners`` over every partner of each task's category
(scoring and ordering them all). Against it ``PartnerPool`` as a routing batch uses it, built for the batch
(grouping, and the tiers of each category a task asks for) and asked for each task: the same suggestions
(tests/unit/test_matcher.py checks that). Best of ``BENCH_ROUNDS`` (default 5) rounds, milliseconds per batch.
"""

from __future__ import annotations

import json
import os
import random
import time

from routing.matcher import Matcher, PartnerPool, PartnerRecord


def main() -> None:
    rounds = int(os.environ.get("BENCH_ROUNDS", "5"))
    categories = [f"category-{i}" for i in range(25)]
    rng = random.Random(0)
    results: dict[str, object] = {}
    for n in (5_000, 20_000):
        partners = [PartnerRecord(f"p{i:06d}", tuple(rng.sample(categories, rng.randint(1, 10)))) for i in range(n)]
        tasks = [([rng.choice(categories)], f"task-{i}") for i in range(64)]
        timings: dict[str, float] = {"baseline": float("inf"), "pool": float("inf")}
        for _ in range(rounds):
            for name in timings:
                t = time.perf_counter()
                pool = PartnerPool(partners)
                if name == "pool":
                    got = [pool.suggest(c, key=k) for c, k in tasks]
                else:
                    want = [Matcher.suggest_partners(pool.by_category.get(c[0], ()), c, key=k) for c, k in tasks]
                timings[name] = min(timings[name], time.perf_counter() - t)
        assert got == want
        results[str(n)] = {
            "partners_per_category": round(sum(len(v) for v in pool.by_category.values()) / len(categories)),
            "baseline_ms_per_batch": round(timings["baseline"] * 1000, 1),
            "pool_ms_per_batch": round(timings["pool"] * 1000, 1),
            "speedup": round(timings["baseline"] / timings["pool"], 1),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
