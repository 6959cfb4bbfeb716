"""Draft latency and tokens/s for both engines, and the share of generated drafts the grounding guard accepted.

    python -m bench.drafting          # BENCH_DRAFTS (default 25): one request per demo category

Each request is a demo category's first example, answered by a demo provider of that category (their
profile, the category's playbook and questions). Baseline, in the same run: the composer alone. Prints JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from decimal import Decimal
from pathlib import Path

from models.drafter import Drafter, DraftInput, ProviderInput


def _requests(limit: int) -> list[tuple[DraftInput, ProviderInput]]:
    demo = Path(__file__).resolve().parents[1] / "marketplace" / "demo"
    taxonomy = json.loads((demo / "taxonomy.json").read_text())["categories"]
    providers = json.loads((demo / "people.json").read_text())["providers"]
    pairs = []
    for c in taxonomy:
        p = next((p for p in providers if c["slug"] in p["categories"]), None)
        if p is None:
            continue
        example = c["examples"][0]
        pairs.append((
            DraftInput(title=example.split(". ")[0][:80], description=example, category_name=c["name"],
                       playbook=tuple(c["playbook"]), questions=tuple(c["questions"])),
            ProviderInput(p["display_name"], p["headline"], tuple(p["skills"]), Decimal(str(p["hourly_rate"])),
                          p["description"]),
        ))
    return pairs[:limit]


def main() -> None:
    requests = _requests(int(os.environ.get("BENCH_DRAFTS", "25")))
    composer = Drafter("composer")
    composer_ms = []
    for task, provider in requests * 20:
        start = time.perf_counter()
        composer.draft(task, provider)
        composer_ms.append((time.perf_counter() - start) * 1000)

    from models.generative import GenerativeModel

    start = time.perf_counter()
    model = GenerativeModel()  # from the converted cache (the first run ever converts the GGUF file first)
    load_s = time.perf_counter() - start
    generative = Drafter("generative", generative=model)
    generative.draft(*requests[0])  # warm up
    seconds, tokens, accepted, kept, dropped = [], 0, 0, 0, {}
    for task, provider in requests:
        start = time.perf_counter()
        result = generative.draft(task, provider)
        seconds.append(time.perf_counter() - start)
        tokens += result.tokens
        accepted += result.engine == "generative"
        kept += result.guard["kept"]
        for item in result.guard["dropped"]:
            why = item["reason"].split(" '")[0].split(":")[0]
            dropped[why] = dropped.get(why, 0) + 1
    generation_s = sum(seconds)
    print(json.dumps({
        "benchmark": "drafting", "requests": len(requests),
        "composer_ms_p50": round(statistics.median(composer_ms), 3),
        "composer_ms_p99": round(sorted(composer_ms)[int(0.99 * (len(composer_ms) - 1))], 3),
        "generative_model_load_s": round(load_s, 2),  # with importing torch and transformers
        "generative_weights_load_s": round(model.load_seconds, 2),  # the cached bf16 safetensors alone
        "generative_model": model.model_id,
        "generative_s_p50": round(statistics.median(seconds), 2), "generative_s_max": round(max(seconds), 2),
        "generated_tokens_per_s": round(tokens / generation_s, 1),
        "guard_accepted_share": round(accepted / len(requests), 3),
        "guard_kept_sentences": kept, "guard_dropped_by_reason": dict(sorted(dropped.items())),
        "slowdown_vs_composer_p50": round(statistics.median(seconds) * 1000 / statistics.median(composer_ms)),
    }))


if __name__ == "__main__":
    main()
