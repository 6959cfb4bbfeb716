"""Fine-tune the encoder's top layers for one taxonomy (SetFit-style: the encoder learns the categories).

A frozen sentence encoder with a linear head tops out around 95-96 % top-1 on a 150-category set; letting
the top transformer layers adapt to the categories separates them better, and the vectors it produces keep
telling apart texts that fit no category. To make this affordable on two CPU cores, only the top
``top_layers`` layers train: the layers below are run once per example by the ONNX graph (``stop_after``)
and their token states are cached, so each step runs forward and backward through three layers of ~12
tokens. The layers' own modules hold the weights, but the step is ours (``_layer_forward``): the dense parts
run on the batch's real tokens only, packed without padding, and dropout masks come from numpy; 1.17 -
1.22x faster per step than calling the transformers layers on padded batches (``python -m bench.tuning``).
On CLINC150 (15,000 examples) one epoch takes 45 - 70 s on two cores, as fast or slow as the machine is that
hour (bench/README.md).

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


class _Dropout:
    """Inverted dropout with masks drawn from a seeded numpy generator.

    ``nn.functional.dropout`` (torch's ``bernoulli_``) took ~9 % of a tuning step on two cores; a mask drawn from
    numpy's PCG64 and multiplied in costs half as much (1.8 against 0.85 ms for a batch's 357 x 384 states).
    Same rule (zero with probability ``p``, scale the rest by ``1 / (1 - p)``), deterministic for a seed.
    """

    def __init__(self, seed: int) -> None:
        # Its own stream: the batch shuffle's generator is seeded with ``seed`` alone.
        self._rng = np.random.default_rng([seed, 1])

    def __call__(self, x: Any, p: float) -> Any:
        import torch

        if p <= 0.0:
            return x
        keep = torch.from_numpy(self._rng.random(tuple(x.shape), dtype=np.float32) >= p)
        return x * keep * (1.0 / (1.0 - p))


class _Packed:
    """A batch of examples' token states, concatenated without padding.

    The layers' dense parts (the QKV, output and feed-forward projections: ~90 % of the work) run on the real
    tokens only; attention scatters them to a padded (batch, heads, longest, longest) layout and gathers back.
    Length-bucketed training batches still carried ~15 % padding, which the dense parts computed for nothing.
    """

    def __init__(self, states: list[np.ndarray]) -> None:
        import torch

        lengths = np.array([s.shape[0] for s in states])
        self.batch, self.longest = len(states), int(lengths.max())
        self.x = torch.from_numpy(np.concatenate(states).astype(np.float32, copy=False))
        starts = np.repeat(np.arange(self.batch) * self.longest, lengths)
        offsets = np.arange(len(self.x)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        self.position = torch.from_numpy(starts + offsets)  # each token's row in the padded layout
        self.sequence = torch.from_numpy(np.repeat(np.arange(self.batch), lengths))
        self.lengths = torch.from_numpy(lengths.astype(np.float32))
        real = torch.arange(self.longest)[None, :] < self.lengths[:, None]
        self.additive = torch.where(real, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]


def _layer_forward(layer: Any, x: Any, batch: _Packed, dropout: _Dropout | None) -> Any:
    """One transformers ``BertLayer`` (eager attention, no cross-attention) on packed tokens, with its own
    weights; ``dropout`` None in evaluation. Computes what ``layer(padded, attention_mask)`` computes for the
    real tokens (tests/integration/test_tuning.py)."""
    import torch
    from torch.nn import functional as F

    def drop(t: Any, p: float) -> Any:
        return t if dropout is None else dropout(t, p)

    attention = layer.attention.self
    heads, size = attention.num_attention_heads, attention.attention_head_size
    width = heads * size
    # One projection for query, key and value: a wider GEMM is faster than three narrow ones.
    weight = torch.cat([attention.query.weight, attention.key.weight, attention.value.weight])
    bias = torch.cat([attention.query.bias, attention.key.bias, attention.value.bias])
    qkv = F.linear(x, weight, bias)
    padded = x.new_zeros(batch.batch * batch.longest, 3 * width).index_copy(0, batch.position, qkv)
    q, k, v = padded.view(batch.batch, batch.longest, 3, heads, size).permute(2, 0, 3, 1, 4)
    scores = torch.matmul(q, k.transpose(-1, -2)) * size**-0.5 + batch.additive
    probs = drop(torch.softmax(scores, dim=-1), attention.dropout.p)
    context = torch.matmul(probs, v).transpose(1, 2).reshape(batch.batch * batch.longest, width)
    context = context.index_select(0, batch.position)
    out = layer.attention.output
    h = out.LayerNorm(drop(out.dense(context), out.dropout.p) + x)
    inner = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h))
    return layer.output.LayerNorm(drop(layer.output.dense(inner), layer.output.dropout.p) + h)


def _pooled(layers: Any, batch: _Packed, dropout: _Dropout | None) -> Any:
    """Mean-pooled, L2-normalized vectors of a packed batch after ``layers`` (as the encoder pools)."""
    import torch

    x = batch.x
    for layer in layers:
        x = _layer_forward(layer, x, batch, dropout)
    summed = x.new_zeros(batch.batch, x.shape[1]).index_add(0, batch.sequence, x)
    pooled = summed / batch.lengths.clamp(min=1.0)[:, None]
    return torch.nn.functional.normalize(pooled, dim=-1)


def tuning_steps(n_examples: int, config: TuningConfig) -> int:
    """Optimizer steps ``tune_top_layers`` takes for ``n_examples``: whole epochs, at least ``config.epochs``
    and at least ``config.min_steps`` steps."""
    per_epoch = max(1, math.ceil(n_examples / config.batch_size))
    return max(config.epochs, math.ceil(config.min_steps / per_epoch)) * per_epoch


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
    lengths = np.array([s.shape[0] for s in states])
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    dropout = _Dropout(config.seed)

    # The head starts at the class centroids of the untrained layers' vectors (batches of similar lengths:
    # a sum per class does not depend on the order). Dropout is _pooled's argument, not the modules' mode.
    centroids = torch.zeros(n_classes, hidden)
    by_length = np.argsort(lengths, kind="stable")
    with torch.no_grad():
        for i in range(0, len(states), 256):
            rows = by_length[i : i + 256]
            centroids.index_add_(0, y[rows], _pooled(layers, _Packed([states[j] for j in rows]), None))
    head = torch.nn.Parameter(torch.nn.functional.normalize(centroids, dim=-1))
    optimizer = torch.optim.AdamW(
        [{"params": layers.parameters(), "lr": config.lr}, {"params": [head], "lr": config.head_lr}],
        weight_decay=config.weight_decay,
        fused=True,  # one kernel per step instead of a dozen passes over the weights: ~5 % of a step
    )
    per_epoch = math.ceil(len(states) / config.batch_size)
    total = tuning_steps(len(states), config)
    epochs = total // per_epoch
    warmup = max(1, int(0.1 * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (total - step) / total)
    )
    rng = np.random.default_rng(config.seed)
    for epoch in range(epochs):
        # Shuffled batches of similar lengths: attention's padded layout stays small.
        order = rng.permutation(len(states))
        order = order[np.argsort(lengths[order] // 4, kind="stable")]
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        rng.shuffle(batches)
        total_loss = 0.0
        for rows in batches:
            vectors = _pooled(layers, _Packed([states[i] for i in rows]), dropout)
            logits = config.scale * vectors @ torch.nn.functional.normalize(head, dim=-1).T
            loss = torch.nn.functional.cross_entropy(logits, y[rows], label_smoothing=config.label_smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach())
        log.info("tuning epoch %d/%d: loss %.4f", epoch + 1, epochs, total_loss / len(batches))
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
