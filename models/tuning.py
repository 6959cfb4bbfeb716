"""Fine-tune the encoder's top layers for one taxonomy (SetFit-style: the encoder learns the categories).

A frozen sentence encoder with a linear head tops out around 95-96 % top-1 on a 150-category set; letting
the top transformer layers adapt to the categories separates them better, and the vectors it produces keep
telling apart texts that fit no category. To make this affordable on two CPU cores, only the top
``top_layers`` layers train: the layers below are run once per example by the ONNX graph (``stop_after``)
and their token states are cached, so each step runs forward and backward through three layers of ~12
tokens. On CLINC150 (15,000 examples) one epoch takes ~50 s on two cores (two layers: ~35 s, and ~0.6 points
less in-scope accuracy; bench/README.md).

The result is a set of weight overrides for those layers. ``tuned_encoder`` builds the full ONNX graph from
the packaged weights with the overrides applied (and quantized like the base encoder), so deciding costs
one ordinary encoder pass. torch is only needed while fitting.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.encoder import MODEL_ID, Encoder, default_threads, packaged_model_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TuningConfig:
    top_layers: int = 3
    epochs: int = 4
    min_steps: int = 240  # small taxonomies get more passes over their examples
    batch_size: int = 32
    lr: float = 2e-4
    head_lr: float = 1e-2
    scale: float = 20.0  # cosine logits scale, as in routing.router
    label_smoothing: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0


def _onnx_backend(encoder: Encoder) -> str:
    # The torch reference backend has no graph of its own: tuned graphs for it are fp32 ONNX (same numbers).
    return "onnx-int8" if encoder.backend == "onnx-int8" else "onnx"


class LayerStates:
    """Token states after the frozen layers, for the examples being tuned on (ONNX, like the base encoder)."""

    def __init__(self, encoder: Encoder, frozen_layers: int) -> None:
        from models.onnx_backend import OnnxEncoder, build_model

        model_dir = packaged_model_dir()
        graph = build_model(model_dir, _onnx_backend(encoder), stop_after=frozen_layers)
        self._impl = OnnxEncoder(model_dir, _onnx_backend(encoder), default_threads(), 128, graph=graph)

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        return self._impl.states(texts)


def frozen_layers(config: TuningConfig) -> int:
    import json

    layers = int(json.loads((packaged_model_dir() / "config.json").read_text())["num_hidden_layers"])
    if not 1 <= config.top_layers <= layers:
        raise ValueError(f"top_layers must be in 1..{layers}")
    return layers - config.top_layers


def tune_top_layers(
    states: list[np.ndarray], labels: np.ndarray, n_classes: int, config: TuningConfig = TuningConfig()
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Train the top layers and a cosine softmax head (``scale * cos(v, head_k)``) to classify ``labels``.

    Returns the trained layers' weights under the packaged model's names, and the head: (n_classes, hidden)
    unit rows. Trained with label smoothing, the head's probabilities stay usable as a confidence. Deterministic
    for a given seed and thread count.
    """
    import torch
    from transformers import AutoModel

    if len(states) != len(labels) or not states:
        raise ValueError("need one label per example, and at least one example")
    torch.manual_seed(config.seed)
    first = frozen_layers(config)
    base = AutoModel.from_pretrained(packaged_model_dir(), attn_implementation="eager")
    layers = torch.nn.ModuleList(base.encoder.layer[first:])
    del base
    hidden = int(states[0].shape[1])

    def batch(rows: np.ndarray) -> tuple[Any, Any]:
        longest = max(states[i].shape[0] for i in rows)
        h = torch.zeros(len(rows), longest, hidden)
        m = torch.zeros(len(rows), longest)
        for j, i in enumerate(rows):
            n = states[i].shape[0]
            h[j, :n] = torch.from_numpy(states[i])
            m[j, :n] = 1.0
        return h, m

    def forward(h: Any, m: Any) -> Any:
        additive = (1.0 - m[:, None, None, :]) * torch.finfo(h.dtype).min
        for layer in layers:
            out = layer(h, attention_mask=additive)
            h = out[0] if isinstance(out, tuple) else out
        pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    lengths = np.array([s.shape[0] for s in states])
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    # The head starts at the class centroids of the untrained layers' vectors.
    layers.eval()
    with torch.no_grad():
        start = torch.cat([forward(*batch(np.arange(i, min(i + 256, len(states))))) for i in range(0, len(states), 256)])
    centroids = torch.zeros(n_classes, hidden).index_add_(0, y, start)
    head = torch.nn.Parameter(torch.nn.functional.normalize(centroids, dim=-1))
    optimizer = torch.optim.AdamW(
        [{"params": layers.parameters(), "lr": config.lr}, {"params": [head], "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    per_epoch = math.ceil(len(states) / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / per_epoch))
    total = epochs * per_epoch
    warmup = max(1, int(0.1 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (total - step) / total)
    )
    rng = np.random.default_rng(config.seed)
    layers.train()
    for epoch in range(epochs):
        # Shuffled batches of similar lengths: little padding, so little wasted compute.
        order = rng.permutation(len(states))
        order = order[np.argsort(lengths[order] // 4, kind="stable")]
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        rng.shuffle(batches)
        total_loss = 0.0
        for rows in batches:
            vectors = forward(*batch(rows))
            logits = config.scale * vectors @ torch.nn.functional.normalize(head, dim=-1).T
            loss = torch.nn.functional.cross_entropy(logits, y[rows], label_smoothing=config.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach())
        log.info("tuning epoch %d/%d: loss %.4f", epoch + 1, epochs, total_loss / len(batches))
    layers.eval()
    overrides = {
        f"encoder.layer.{first + j}.{name}": tensor.detach().numpy().astype(np.float32).copy()
        for j, layer in enumerate(layers)
        for name, tensor in layer.state_dict().items()
    }
    return overrides, torch.nn.functional.normalize(head.detach(), dim=-1).numpy().astype(np.float32)


def tuned_encoder(base: Encoder, overrides: dict[str, np.ndarray], tag: str) -> Encoder:
    """An Encoder (thread-safe, micro-batched) running the packaged model with ``overrides`` applied."""
    from models.onnx_backend import OnnxEncoder, build_model

    model_dir = packaged_model_dir()
    backend = _onnx_backend(base)
    graph = build_model(model_dir, backend, overrides=overrides)
    impl = OnnxEncoder(model_dir, backend, default_threads(), base.batch_size, graph=graph)
    return Encoder(impl=impl, model_id=f"{MODEL_ID}+tuned:{tag}")
