"""Evaluate the router on a routing set: python -m routing.evaluate PATH [--shots K] [--json].

The set's format is described in shared/eval/README.md: ``routes`` (examples per route: all the router may
learn from, thresholds included) and ``cases`` (texts to route; ``route: null`` means out of scope).
Latency is one decision end to end: encode the text, then categorize it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from routing.router import Router
from routing.tuned import fit_routing_model


@dataclass(frozen=True, slots=True)
class RoutingSet:
    name: str
    routes: dict[str, list[str]]
    cases: list[tuple[str, str | None]]
    blank_examples: int = 0  # example texts left out because they were empty or only whitespace

    @classmethod
    def load(cls, path: Path) -> RoutingSet:
        """Read a set in the shared format; a malformed one stops the run, naming the problem."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"cannot read routing set {path}: {exc}") from exc
        return cls.parse(data, path.stem)

    @classmethod
    def parse(cls, data: Any, default_name: str = "routing set") -> RoutingSet:
        def bad(problem: str) -> SystemExit:
            return SystemExit(f"not a routing set ({default_name}): {problem}")

        if not isinstance(data, dict):
            raise bad("expected a JSON object with 'routes' and 'cases'")
        raw_routes, raw_cases = data.get("routes"), data.get("cases")
        if not isinstance(raw_routes, dict) or not raw_routes:
            raise bad("'routes' must be an object mapping each route to its example texts")
        routes: dict[str, list[str]] = {}
        blank = 0
        for route, examples in raw_routes.items():
            if not isinstance(examples, list) or not all(isinstance(t, str) for t in examples):
                raise bad(f"route {route!r}: examples must be a list of texts")
            routes[str(route)] = [t for t in examples if t.strip()]
            blank += len(examples) - len(routes[str(route)])
        empty = sorted(r for r, ex in routes.items() if not ex)
        if empty:
            raise bad(f"routes without examples: {empty[:5]}")
        if not isinstance(raw_cases, list) or not raw_cases:
            raise bad("'cases' must be a non-empty list of {\"text\": ..., \"route\": ... or null}")
        cases: list[tuple[str, str | None]] = []
        for i, case in enumerate(raw_cases):
            if not isinstance(case, dict) or not isinstance(case.get("text"), str) or "route" not in case \
                    or not (case["route"] is None or isinstance(case["route"], str)):
                raise bad(f"case {i}: expected {{\"text\": a text, \"route\": a route or null}}")
            cases.append((case["text"], case["route"]))
        unknown = sorted({r for _, r in cases if r is not None and r not in routes})
        if unknown:
            raise bad(f"cases name routes that have no examples: {unknown[:5]}")
        return cls(str(data.get("name") or default_name), routes, cases, blank)

    def with_shots(self, shots: int | None, seed: int = 0) -> RoutingSet:
        if not shots:
            return self
        rng = random.Random(seed)
        routes = {r: rng.sample(ex, min(shots, len(ex))) for r, ex in self.routes.items()}
        return RoutingSet(self.name, routes, self.cases, self.blank_examples)


def metrics(truth: list[str | None], predicted: list[str | None]) -> dict[str, float | None]:
    """The four quality metrics. One that has nothing to be measured on is None (JSON null), not 0: a set
    without out-of-scope cases has no out-of-scope recall, and a router that never abstained has no
    out-of-scope precision."""
    in_scope = [(t, p) for t, p in zip(truth, predicted, strict=True) if t is not None]
    oos = [p for t, p in zip(truth, predicted, strict=True) if t is None]
    abstained = [t for t, p in zip(truth, predicted, strict=True) if p is None]
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for t, p in zip(truth, predicted, strict=True):
        if t is not None and t == p:
            tp[t] += 1
            continue
        if p is not None:
            fp[p] += 1
        if t is not None:
            fn[t] += 1
    # Over every route the cases name or the router chose: a route with no cases of its own that the router
    # sends cases to wrongly scores F1 = 0, as in scikit-learn's macro average (out of scope is not a class).
    routes = {t for t in truth if t is not None} | {p for p in predicted if p is not None}
    f1 = [2 * tp[r] / (2 * tp[r] + fp[r] + fn[r]) for r in routes]
    return {
        "in_scope_accuracy": sum(t == p for t, p in in_scope) / len(in_scope) if in_scope else None,
        "oos_recall": sum(p is None for p in oos) / len(oos) if oos else None,
        "oos_precision": sum(t is None for t in abstained) / len(abstained) if abstained else None,
        "macro_f1": float(np.mean(f1)) if in_scope else None,  # a set of out-of-scope cases alone has none
    }


def evaluate(routing_set: RoutingSet, encoder: Any, router: Router | None = None, tune: bool = True) -> dict[str, Any]:
    labels = [r for r, ex in routing_set.routes.items() for _ in ex]
    texts = [t for ex in routing_set.routes.values() for t in ex]
    start = time.perf_counter()
    model = fit_routing_model(labels, texts, encoder, tune=tune, router=router)
    router = model.router
    fit_s = time.perf_counter() - start
    predicted: list[str | None] = []
    latencies: list[float] = []
    for text, _ in routing_set.cases:
        t0 = time.perf_counter()
        decision = model.decide(text)
        latencies.append((time.perf_counter() - t0) * 1000)
        predicted.append(decision.primary)
    result: dict[str, Any] = {"set": routing_set.name, "routes": len(routing_set.routes), "examples": len(texts),
                              "cases": len(routing_set.cases)}
    result.update({k: None if v is None else round(v, 4)
                   for k, v in metrics([r for _, r in routing_set.cases], predicted).items()})
    result.update({
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "fit_s": round(fit_s, 1),
        "threshold": round(router.threshold, 4),
        "similarity_threshold": round(router.similarity_threshold, 4),
        "tuned": model.tuned,
        "model_id": model.model_id,
    })
    return result


def _shown(value: float | None, why_not: str, spec: str = ".2%") -> str:
    return f"n/a ({why_not})" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routing.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="routing set (JSON: routes + cases)")
    parser.add_argument("--shots", type=int, default=None, help="use at most K examples per route")
    parser.add_argument("--seed", type=int, default=0, help="seed for --shots sampling")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the metrics")
    parser.add_argument("--frozen", action="store_true",
                        help="do not fine-tune the encoder's top layers (head over frozen vectors only)")
    args = parser.parse_args(argv)
    if args.shots is not None and args.shots < 1:
        parser.error("--shots must be at least 1")

    from models import load_encoder

    routing_set = RoutingSet.load(args.path).with_shots(args.shots, args.seed)
    if routing_set.blank_examples:
        print(f"note: {routing_set.blank_examples} blank example text(s) left out", file=sys.stderr)
    result = evaluate(routing_set, load_encoder(), tune=not args.frozen)
    print(f"{result['set']}: {result['routes']} routes, {result['examples']} examples, {result['cases']} cases")
    print(f"  in-scope accuracy  {_shown(result['in_scope_accuracy'], 'no in-scope cases')}")
    print(f"  out-of-scope recall {_shown(result['oos_recall'], 'no out-of-scope cases')}"
          f"  precision {_shown(result['oos_precision'], 'it never abstained')}")
    print(f"  macro F1           {_shown(result['macro_f1'], 'no in-scope cases', '.4f')}")
    print(f"  decision latency   p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms")
    print(f"  fit                {result['fit_s']} s, {'tuned' if result['tuned'] else 'frozen'} encoder")
    if args.json:
        print(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
