"""One fine-tuning step of the router's top encoder layers (models.tuning): milliseconds per step.

The fit of a tuned routing model is the long pole of a CLINC150-sized ``routing.evaluate`` run (issue #3: the
whole run within 15 minutes on two cores): two tuning runs of four epochs, ~3,000 steps in all. Baseline,
measured in the same run on the same batches: the step as transformers runs it, the layers called on padded
(batch, longest, hidden) states with their own ``nn.Dropout`` and a default (foreach) AdamW. Measured:
``models.tuning``'s own step (packed tokens, one QKV projection, its dropout, fused AdamW).

``BENCH_EXAMPLES`` (default 1,600) CLINC150 examples (``../shared/eval/clinc150-dev.json``, or the path in
``BENCH_SET``) are run through the frozen lower layers once; then ``BENCH_ROUNDS`` (default 4) rounds
alternate the two kinds of step, each over one epoch of length-bucketed batches of 32 (the fit's batches),
starting from the same weights, then the pass that starts the head at the class centroids (every example once,
batches of 256). Reported: each kind's median ms per step and per example of that pass over the rounds, the
ratios, and the pooled vectors' largest difference between the two forwards in evaluation mode (they compute
the same thing).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SET = Path(__file__).resolve().parents[2] / "shared/eval/clinc150-dev.json"


def _padded(states: list[np.ndarray]) -> tuple[Any, Any]:
    import torch

    longest = max(s.shape[0] for s in states)
    h = torch.zeros(len(states), longest, states[0].shape[1])
    mask = torch.zeros(len(states), longest)
    for j, s in enumerate(states):
        h[j, : len(s)] = torch.from_numpy(s)
        mask[j, : len(s)] = 1.0
    return h, mask


def _transformers_forward(layers: Any, h: Any, mask: Any) -> Any:
    import torch

    additive = (1.0 - mask[:, None, None, :]) * torch.finfo(h.dtype).min
    for layer in layers:
        out = layer(h, attention_mask=additive)
        h = out[0] if isinstance(out, tuple) else out
    pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return torch.nn.functional.normalize(pooled, dim=-1)


def main() -> None:
    import torch
    from transformers import AutoModel

    from models import load_encoder
    from models.encoder import packaged_model_dir
    from models.tuning import LayerStates, TuningConfig, _Dropout, _Packed, _pooled, frozen_layers

    n = int(os.environ.get("BENCH_EXAMPLES", "1600"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "4"))
    data = json.loads(Path(os.environ.get("BENCH_SET", DEFAULT_SET)).read_text())
    pairs = [(route, text) for route, texts in data["routes"].items() for text in texts]
    rng = np.random.default_rng(0)
    pairs = [pairs[i] for i in rng.choice(len(pairs), min(n, len(pairs)), replace=False)]
    slugs = sorted({route for route, _ in pairs})
    y = torch.as_tensor([slugs.index(route) for route, _ in pairs])
    config = TuningConfig()
    states = LayerStates(load_encoder(), frozen_layers(config))([text for _, text in pairs])
    lengths = np.array([s.shape[0] for s in states])
    order = rng.permutation(len(states))
    order = order[np.argsort(lengths[order] // 4, kind="stable")]
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    rng.shuffle(batches)

    base = AutoModel.from_pretrained(packaged_model_dir(), attn_implementation="eager")
    start = {k: v.clone() for k, v in base.encoder.layer[frozen_layers(config):].state_dict().items()}

    def fresh() -> tuple[Any, Any]:
        layers = torch.nn.ModuleList(base.encoder.layer[frozen_layers(config):])
        layers.load_state_dict(start)
        head = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(len(slugs), states[0].shape[1]), dim=-1))
        return layers, head

    layers, _ = fresh()
    layers.eval()
    with torch.no_grad():
        sample = [states[i] for i in batches[0]]
        difference = float((_transformers_forward(layers, *_padded(sample))
                            - _pooled(layers, _Packed(sample), None)).abs().max())

    def epoch(kind: str) -> float:
        torch.manual_seed(0)
        layers, head = fresh()
        packed = kind == "relay"
        optimizer = torch.optim.AdamW(
            [{"params": layers.parameters(), "lr": config.lr}, {"params": [head], "lr": config.head_lr}],
            weight_decay=config.weight_decay, fused=packed,
        )
        dropout = _Dropout(0)
        layers.train()
        t0 = time.perf_counter()
        for rows in batches:
            chosen = [states[i] for i in rows]
            if packed:
                vectors = _pooled(layers, _Packed(chosen), dropout)
            else:
                vectors = _transformers_forward(layers, *_padded(chosen))
            logits = config.scale * vectors @ torch.nn.functional.normalize(head, dim=-1).T
            loss = torch.nn.functional.cross_entropy(logits, y[rows], label_smoothing=config.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - t0) * 1000 / len(batches)

    def centroid_pass(kind: str) -> float:
        """The pass that starts the head at the class centroids: every example, evaluation mode, batches of 256
        (in example order and padded for transformers; by length and packed for models.tuning)."""
        layers, _ = fresh()
        layers.eval()
        rows = np.arange(len(states)) if kind == "transformers" else np.argsort(lengths, kind="stable")
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(rows), 256):
                chosen = [states[j] for j in rows[i : i + 256]]
                if kind == "transformers":
                    _transformers_forward(layers, *_padded(chosen))
                else:
                    _pooled(layers, _Packed(chosen), None)
        return (time.perf_counter() - t0) * 1000 / len(states)

    results: dict[str, list[float]] = {"transformers": [], "relay": []}
    centroids: dict[str, list[float]] = {"transformers": [], "relay": []}
    for _ in range(rounds):
        for kind in results:
            results[kind].append(round(epoch(kind), 1))
            centroids[kind].append(round(centroid_pass(kind), 3))
    baseline, ours = (round(statistics.median(results[k]), 1) for k in ("transformers", "relay"))
    print(json.dumps({
        "examples": len(states), "steps_per_round": len(batches), "threads": torch.get_num_threads(),
        "real_tokens_per_step": round(float(lengths.sum()) / len(batches), 1),
        "padded_tokens_per_step": round(sum(len(b) * int(lengths[b].max()) for b in batches) / len(batches), 1),
        "baseline_ms_per_step": baseline, "relay_ms_per_step": ours, "ratio": round(baseline / ours, 3),
        "rounds": results, "eval_max_difference": difference,
        "centroid_pass_ms_per_example": {k: round(statistics.median(v), 3) for k, v in centroids.items()},
        "centroid_pass_ratio": round(statistics.median(centroids["transformers"]) / statistics.median(centroids["relay"]), 3),
    }))


if __name__ == "__main__":
    main()
