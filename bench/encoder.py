"""Encoder throughput and single-text latency, as ratios against plain SentenceTransformer.encode (fp32)."""

from __future__ import annotations

import json
import statistics
import time

from models import load_encoder
from models.encoder import packaged_model_dir

SENTENCES = [
    "Build a responsive landing page for my bakery with an online order form.",
    "Reconcile six months of bank transactions in QuickBooks.",
    "Translate our employee handbook from English into Portuguese.",
    "Fix the leaking kitchen tap and replace the cartridge.",
] * 64


def _throughput(encode, texts: list[str], repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        encode(texts)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def _latency_ms(encode, text: str, n: int = 50) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        encode([text])
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    from sentence_transformers import SentenceTransformer

    baseline = SentenceTransformer(str(packaged_model_dir()), device="cpu")
    encoder = load_encoder()

    def base(texts: list[str]):  # type: ignore[no-untyped-def]
        return baseline.encode(texts, batch_size=64, normalize_embeddings=True)

    base(SENTENCES[:8]), encoder.encode(SENTENCES[:8])  # warm up
    result = {
        "baseline_sentences_per_s": round(_throughput(base, SENTENCES), 1),
        "encoder_sentences_per_s": round(_throughput(encoder.encode, SENTENCES), 1),
        "baseline_single_ms_p50": round(_latency_ms(base, SENTENCES[0]), 2),
        "encoder_single_ms_p50": round(_latency_ms(encoder.encode, SENTENCES[0]), 2),
    }
    result["throughput_ratio"] = round(result["encoder_sentences_per_s"] / result["baseline_sentences_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
