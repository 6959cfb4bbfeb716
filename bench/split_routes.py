"""Derive a harder routing set from one in the shared format: keep a random half of the routes; the other half's
cases become out-of-scope requests (next to the set's own out-of-scope cases).

    python -m bench.split_routes ../shared/eval/clinc150-dev.json /tmp/clinc75.json [--seed 7] [--per-route 2]
    python -m routing.evaluate /tmp/clinc75.json --json

Requests from a dropped sibling route (another banking intent, say) are much harder to reject than generic
out-of-scope requests, so this checks that the thresholds, fitted from the examples alone, still hold up.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.split_routes", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-route", type=int, default=2, help="cases taken from each dropped route")
    args = parser.parse_args(argv)
    data = json.loads(args.source.read_text(encoding="utf-8"))
    routes = sorted(data["routes"])
    random.Random(args.seed).shuffle(routes)
    keep = set(routes[: len(routes) // 2])
    cases = [c for c in data["cases"] if c["route"] is None or c["route"] in keep]
    taken: dict[str, int] = {}
    for c in data["cases"]:
        route = c["route"]
        if route is not None and route not in keep and taken.get(route, 0) < args.per_route:
            taken[route] = taken.get(route, 0) + 1
            cases.append({"text": c["text"], "route": None})
    derived = {
        "name": f"{data.get('name', args.source.stem)}-half{args.seed}",
        "source": f"derived from {args.source.name}: {len(keep)} routes; out of scope = the set's own plus "
                  f"{args.per_route} cases of each dropped route",
        "routes": {r: data["routes"][r] for r in sorted(keep)},
        "cases": cases,
    }
    args.target.write_text(json.dumps(derived), encoding="utf-8")
    print(json.dumps({"routes": len(keep), "cases": len(cases), "out_of_scope": sum(c["route"] is None for c in cases)}))


if __name__ == "__main__":
    main()
