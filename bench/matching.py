"""Semantic fit in the tuned encoder's space against the shared encoder's: does ranking providers with the
vectors of the model that decides the category (one encoder pass per task) still put the right provider first?

Cases: ``bench/data/matching-demo.json``, requests written by hand for the demo marketplace, each naming a
specialty of exactly one provider in its category. Providers: the demo's 40 (``marketplace/demo/people.json``),
embedded from their profile text as the routing engine embeds them. For each case, the providers of its category
are ranked by semantic fit alone (cosine of request and profile) and by the whole matcher (``routing.Matcher``,
every provider free, no budget, no ratings, no offers yet), in the shared encoder's space (baseline, what ranked
providers before 2026-12-04) and in the space of the demo taxonomy's tuned encoder (fitted first, or read from
the model cache where the app saves it).

Prints one JSON object: top-1 accuracy and mean reciprocal rank in each space, their ratios, and how often the
two spaces put the same provider first.

    python -m bench.matching
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from marketplace.domain.providers.services import profile_text
from marketplace.domain.routing.engine import RoutingEngine
from models import load_encoder
from routing import Matcher, ProviderRecord
from routing.tuned import RoutingModel, fit_routing_model

CASES = Path(__file__).parent / "data" / "matching-demo.json"


def tuned_model(labels: list[str], texts: list[str], encoder: Any) -> tuple[RoutingModel, float | None]:
    engine = RoutingEngine(encoder)  # where the app's routing engine saves this taxonomy's model, and how it fits
    path = engine.tuned_path(labels, texts)
    if path.exists():
        return RoutingModel.load(path, encoder), None
    started = time.perf_counter()
    model = fit_routing_model(labels, texts, encoder, tune=True, config=engine.tuning)
    model.save(path)
    return model, round(time.perf_counter() - started, 1)


def scores(encoder: Any, cases: list[dict[str, str]], people: list[dict[str, Any]]) -> dict[str, Any]:
    profiles = encoder.encode([profile_text(SimpleNamespace(**p)) for p in people])  # type: ignore[arg-type]
    requests = encoder.encode([c["text"] for c in cases])
    records = [ProviderRecord(provider_id=p["key"], vector=v, categories=frozenset(p["categories"]),
                              capacity=p["capacity"], load=0, accepting_work=True)
               for p, v in zip(people, profiles, strict=True)]
    matcher = Matcher()
    firsts: dict[str, list[str]] = {"semantic": [], "matcher": []}
    ranks: dict[str, list[int]] = {"semantic": [], "matcher": []}
    for case, vector in zip(cases, requests, strict=True):
        rows = [i for i, p in enumerate(people) if case["category"] in p["categories"]]
        by_fit = [people[rows[i]]["key"] for i in np.argsort(-(profiles[rows] @ vector), kind="stable")]
        by_matcher = [c.provider_id for c in matcher.rank(vector, [case["category"]], records)]
        for kind, order in (("semantic", by_fit), ("matcher", by_matcher)):
            firsts[kind].append(order[0])
            ranks[kind].append(order.index(case["provider"]) + 1)
    return {
        "firsts": firsts,
        **{f"{kind}_top1": round(float(np.mean([r == 1 for r in ranks[kind]])), 4) for kind in ranks},
        **{f"{kind}_mrr": round(float(np.mean([1 / r for r in ranks[kind]])), 4) for kind in ranks},
    }


def main() -> None:
    taxonomy = json.loads(resources.files("marketplace.demo").joinpath("taxonomy.json").read_text())
    people = json.loads(resources.files("marketplace.demo").joinpath("people.json").read_text())["providers"]
    cases = json.loads(CASES.read_text())["cases"]
    labels = [c["slug"] for c in taxonomy["categories"] for _ in c["examples"]]
    texts = [e for c in taxonomy["categories"] for e in c["examples"]]
    shared = load_encoder()
    model, fit_s = tuned_model(labels, texts, shared)
    base, tuned = scores(shared, cases, people), scores(model.encoder, cases, people)
    result: dict[str, Any] = {"cases": len(cases), "tuned_fit_s": fit_s, "tuned_model": model.model_id}
    for kind in ("semantic", "matcher"):
        for metric in ("top1", "mrr"):
            key = f"{kind}_{metric}"
            result[f"shared_{key}"], result[f"tuned_{key}"] = base[key], tuned[key]
            result[f"ratio_{key}"] = round(tuned[key] / base[key], 3) if base[key] else None
        same = [a == b for a, b in zip(base["firsts"][kind], tuned["firsts"][kind], strict=True)]
        result[f"{kind}_same_first"] = round(float(np.mean(same)), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
