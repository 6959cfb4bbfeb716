"""Fine-tuning the encoder's top layers (models.tuning) with the real local model: the packed training forward
computes (and differentiates) what the transformers layers do, dropout follows its rule, and a fit is repeatable."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models import load_encoder
from models.tuning import (
    LayerStates,
    TuningConfig,
    _Dropout,
    _Packed,
    _pooled,
    frozen_layers,
    tune_top_layers,
)

pytestmark = pytest.mark.model

TAXONOMY = json.loads((Path(__file__).parents[2] / "marketplace/demo/taxonomy.json").read_text())
CATEGORIES = TAXONOMY["categories"][:6]
TEXTS = [e for c in CATEGORIES for e in c["examples"][:6]]
LABELS = np.array([i for i, c in enumerate(CATEGORIES) for _ in c["examples"][:6]])
CONFIG = TuningConfig(epochs=1, min_steps=6, batch_size=8)


@pytest.fixture(scope="module")
def states() -> list[np.ndarray]:
    return LayerStates(load_encoder(), frozen_layers(CONFIG))(TEXTS)


def test_packed_layers_compute_what_the_transformers_layers_compute(states: list[np.ndarray]) -> None:
    import torch
    from transformers import AutoModel

    from bench.tuning import _padded, _transformers_forward  # the layers called as transformers calls them
    from models.encoder import packaged_model_dir

    assert len({s.shape[0] for s in states}) > 3  # texts of different lengths, so padding and positions matter
    base = AutoModel.from_pretrained(packaged_model_dir(), attn_implementation="eager").eval()
    layers = torch.nn.ModuleList(base.encoder.layer[frozen_layers(CONFIG):])
    weights = torch.randn(len(states), states[0].shape[1], generator=torch.Generator().manual_seed(0))

    def run(forward) -> tuple[np.ndarray, dict[str, np.ndarray]]:  # vectors, and the gradients a loss sends back
        layers.zero_grad()
        vectors = forward()
        (vectors * weights).sum().backward()
        return vectors.detach().numpy(), {n: (torch.zeros_like(p) if p.grad is None else p.grad).numpy().copy()
                                          for n, p in layers.named_parameters()}  # no gradient: zeros

    expected, expected_grads = run(lambda: _transformers_forward(layers, *_padded(states)))
    packed, packed_grads = run(lambda: _pooled(layers, _Packed(states), None))
    np.testing.assert_allclose(packed, expected, atol=2e-6)
    # Every trained weight gets the same gradient as through the transformers layers (query, key and value go
    # through one concatenated projection).
    assert packed_grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        np.testing.assert_allclose(packed_grads[name], grad, atol=1e-5, rtol=1e-4, err_msg=name)


def test_dropout_zeroes_about_p_of_the_values_and_scales_the_rest() -> None:
    import torch

    x = torch.ones(200, 500)
    out = _Dropout(seed=3)(x, 0.1).numpy()
    kept = out != 0
    assert abs(1.0 - kept.mean() - 0.1) < 0.005
    np.testing.assert_allclose(out[kept], 1 / 0.9, rtol=1e-6)
    assert _Dropout(seed=3)(x, 0.0) is x
    np.testing.assert_array_equal(_Dropout(seed=3)(x, 0.1).numpy(), out)  # same seed, same mask


def test_a_fit_is_repeatable_for_a_seed_and_another_seed_gives_another_fit(states: list[np.ndarray]) -> None:
    first, head = tune_top_layers(states, LABELS, len(CATEGORIES), CONFIG)
    again, head_again = tune_top_layers(states, LABELS, len(CATEGORIES), CONFIG)
    other, _ = tune_top_layers(states, LABELS, len(CATEGORIES), replace(CONFIG, seed=1))
    assert first.keys() == again.keys() and head.shape == (len(CATEGORIES), states[0].shape[1])
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    np.testing.assert_array_equal(head, head_again)
    assert any(not np.array_equal(first[name], other[name]) for name in first)

