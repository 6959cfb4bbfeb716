"""ONNX Runtime backend for the encoder: a BERT graph built on this machine from the packaged weights, cached.

The graph is written directly from ``model.safetensors`` (EmbedLayerNormalization, ONNX Attention,
LayerNormalization, BiasGelu, MatMul or MatMulIntegerToFloat), so it depends on neither a torch exporter nor
ORT's pattern fusion, and it ends with the mean pooling and L2 normalization. Tokens are flattened to rows
``(batch * seq, hidden)`` so every per-token op works on one 2-D matrix. Each choice here was measured;
bench/README.md has the numbers.

Two variants:

* ``onnx``: fp32 MatMuls. Same numbers as sentence-transformers up to float rounding.
* ``onnx-int8``: every Linear is an int8 x int8 GEMM (VNNI) with per-output-channel weight scales and
  *per-token* activation scales computed at run time. Per-token scales keep a sentence's vector independent
  of what else is in the batch (per-tensor dynamic quantization is not: one long text in a batch changes
  every other row), and keep [CLS]/[SEP] rows, whose activations are much larger than the rest, from crushing
  the other tokens. The inputs of the QKV and FFN-in projections (LayerNorm outputs with a few outlier
  channels) are smoothed first (SmoothQuant, alpha 0.5): channel j is divided by s_j and the weight row
  multiplied by s_j, with s_j taken from channel maxima measured on a fixed calibration set below.
  On x86 CPUs without VNNI, ONNX Runtime multiplies u8 x s8 with an instruction (pmaddubsw) whose pairwise
  int16 sums saturate at full 8-bit ranges; there the weights are quantized to 7 bits (-63..63), which cannot
  saturate (measured on an AVX-only EPYC: mean cosine to fp32 0.9944 with 8-bit weights, 0.9972 with 7-bit).

Artefacts are cached under ``RELAY_MODEL_CACHE`` (default ``$RELAY_VAR_DIR/model-cache``, i.e.
``var/model-cache``), named by a hash of the weights file, the backend, the builder version and the
onnx/onnxruntime versions; a missing, stale or unreadable file is rebuilt and written atomically (temporary
file + rename).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("onnx", "onnx-int8")
# Bump when the graph written by build_model() changes: it is part of the cache key.
BUILDER_VERSION = "5"
OPSET = 23
IR_VERSION = 11
SMOOTH_ALPHA = 0.5
PAD_WASTE = 0.15  # a run of texts pads to its longest; padded tokens may add this share to the real ones
# A run holds at most this many tokens (padding included): runs whose activations stay small enough for the
# core's caches are faster per text. 1,200 task texts of ~38 tokens, 8 alternating rounds: 455 texts/s with
# runs of up to 64 texts, 578 with at most 512 tokens (256: 576); 350 short texts: 862 -> 980 (bench/README.md).
RUN_TOKENS = 512
GELU_FLOOR = 0.17  # erf GELU's minimum is -0.16997 (at x = -0.752), so max |GELU(x)| <= max(max x, 0.17)
MIN_LANE_TEXTS = 4  # a call is dealt out to several lanes only when each gets at least this many texts

# Channel maxima for SmoothQuant are measured on these. They only set per-channel scales; keep them varied
# (requests, chit-chat, very short replies, other languages) rather than close to any test set.
CALIBRATION_TEXTS = (
    "I need a plumber to fix a leaking pipe under the kitchen sink.",
    "Design a logo and a simple colour palette for my coffee shop.",
    "hello",
    "thanks!",
    "ok",
    "?",
    "Need help asap",
    "Can you translate this 12-page supply contract into German by Friday?",
    "Our online shop keeps crashing every night around midnight, please investigate.",
    "Edit a ten minute wedding video with music and colour grading.",
    "Prepare my 2025 tax return; I am self-employed with two rental flats.",
    "Looking for someone to assemble IKEA furniture this weekend in Leeds.",
    "What is the price for a one hour call?",
    "Write five blog posts about healthy eating for our website, about 800 words each, SEO friendly.",
    "Clean a three-bedroom apartment after we move out, including the oven and the windows.",
    "Math tutoring for my 14 year old, twice a week online, algebra and geometry.",
    "Build an iOS and Android app for booking yoga classes with push reminders.",
    "Proofread my master's thesis (60 pages, APA style).",
    "Reconcile the last quarter of bank statements against our invoices in Xero.",
    "Record a warm, friendly female voice-over for a 90 second explainer video.",
    "Review a commercial lease before I sign it next week.",
    "Manage our Instagram and TikTok accounts: three posts a week plus replies.",
    "Install two new sockets and a ceiling light in the garage.",
    "Enter 2,000 paper survey responses into a spreadsheet.",
    "Answer customer support emails for our web shop on weekends.",
    "Retouch 40 product photos on a white background for Amazon.",
    "Ich brauche jemanden, der meine Website auf Deutsch übersetzt.",
    "Necesito un contador para mi pequeña empresa en Madrid.",
    "Je cherche un graphiste pour une affiche de concert.",
    "ウェブサイトのデザインをお願いしたいです",
    "URGENT: server down, customers cannot pay!!!",
    "pls fix my excel macro it gives error 1004",
    "Analyse our sales data in Google Sheets and build a monthly dashboard with pivot tables and charts, "
    "then write a short summary of the trends for the board meeting.",
    "The quick brown fox jumps over the lazy dog.",
    "asdf qwerty 12345",
    "Schedule meetings, book travel and keep my inbox tidy, about ten hours a week.",
)


# -- cache ---------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    explicit = os.environ.get("RELAY_MODEL_CACHE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("RELAY_VAR_DIR", "var")) / "model-cache"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def weight_levels(machine: str | None = None, flags: set[str] | None = None) -> int:
    """Largest int8 weight magnitude: 127, or 63 where u8 x s8 products would saturate (x86 without VNNI)."""
    import platform

    override = os.environ.get("RELAY_INT8_WEIGHT_LEVELS")
    if override:
        if override not in ("63", "127"):
            raise ValueError("RELAY_INT8_WEIGHT_LEVELS must be 63 or 127")
        return int(override)
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return 127  # ARM's dot-product kernels accumulate in int32
    flags = _cpu_flags() if flags is None else flags
    return 127 if flags & {"avx512_vnni", "avx_vnni", "amx_int8"} else 63


def artefact_key(model_dir: Path, backend: str) -> str:
    """Changes whenever the weights, the builder or the libraries that write or run the graph change."""
    import onnx
    import onnxruntime

    parts = {
        "weights": file_sha256(model_dir / "model.safetensors"),
        "config": file_sha256(model_dir / "config.json"),
        "backend": backend,
        "weight_levels": weight_levels() if backend == "onnx-int8" else None,
        "builder": BUILDER_VERSION,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def artefact_path(model_dir: Path, backend: str, directory: Path | None = None) -> Path:
    return (directory or cache_dir()) / f"all-MiniLM-L6-v2.{backend}.{artefact_key(model_dir, backend)}.onnx"


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` through a temporary file of this writer's own: processes sharing a cache
    may write the same file at once, and readers must never see a part of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; other users of the cache must be able to read it
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file, no file, or the whole new one
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _remove_stale(path: Path, backend: str) -> None:
    for old in path.parent.glob(f"all-MiniLM-L6-v2.{backend}.*.onnx"):
        if old != path:
            with contextlib.suppress(OSError):
                old.unlink()


# -- graph ---------------------------------------------------------------------------------------------------
class _Graph:
    """A small helper to write an ONNX graph node by node."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, hint: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, domain: str = "", **attrs: Any) -> Any:
        from onnx import helper

        outputs = [self.name(op_type) for _ in range(n_out)]
        self.nodes.append(
            helper.make_node(
                op_type,
                list(inputs),
                outputs,
                domain=domain or None,
                name=self.name(op_type + "_node"),
                **attrs,
            )
        )
        return outputs[0] if n_out == 1 else outputs


class _Builder:
    """Writes the BERT encoder + mean pooling + L2 normalization as one ONNX graph."""

    def __init__(
        self,
        weights: dict[str, np.ndarray],
        config: dict[str, Any],
        quantize: bool,
        smooth: dict[str, np.ndarray] | None = None,
        probe: bool = False,
        stop_after: int | None = None,
        levels: int = 127,
    ) -> None:
        self.w = weights
        self.levels = levels
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        if (
            config.get("hidden_act", "gelu") != "gelu"
            or config.get("position_embedding_type", "absolute") != "absolute"
        ):
            raise ValueError("the ONNX builder only writes BERT with absolute positions and erf GELU")
        self.quantize = quantize
        self.smooth = smooth or {}
        self.probe = probe  # expose the inputs of the smoothed projections as outputs (for calibration)
        self.probes: list[str] = []
        # Stop after this many layers and output the token states (batch, seq, hidden) instead of the
        # sentence vector: the input the router's fine-tuning trains its top layers on.
        self.stop_after = stop_after
        if stop_after is not None and not 0 <= stop_after <= self.layers:
            raise ValueError(f"stop_after must be in 0..{self.layers}")
        self.g = _Graph()

    @staticmethod
    def smooth_sites(layers: int) -> list[str]:
        return [f"{i}.{kind}" for i in range(layers) for kind in ("qkv", "ffn_in")]

    # -- linear layers: y = x @ W.T for torch Linear weights W (out, in); the caller adds the biases ----
    def project(self, x: str, weights: Sequence[np.ndarray], site: str,
                floor: float | None = None) -> list[str]:
        """One input, several projections (Q, K and V share one quantized copy of x). ``floor``: x is known
        to be at least -floor everywhere (a GELU's output), so max |x| per row needs only the row's
        maximum."""
        g = self.g
        smoothable = site in self.smooth_sites(self.layers)
        if floor is not None and smoothable:
            raise ValueError("a smoothed input is divided by its channel scales: its floor is not known")
        ws = [np.asarray(w, dtype=np.float32).T for w in weights]  # (in, out)
        if self.probe and smoothable:
            self.probes.append(x)
        if not self.quantize:
            return [g.op("MatMul", [x, g.const("w", w)]) for w in ws]
        if site in self.smooth:  # SmoothQuant: x / s and s * W, with s from calibrated channel maxima
            act_max = np.maximum(self.smooth[site].astype(np.float32), 1e-5)
            w_max = np.maximum(np.abs(np.concatenate(ws, axis=1)).max(axis=1), 1e-5)
            s = act_max**SMOOTH_ALPHA / w_max ** (1 - SMOOTH_ALPHA)
            s = s / np.exp(np.log(s).mean())
            ws = [w * s[:, None] for w in ws]
            x = g.op("Mul", [x, g.const("inv_smooth", (1.0 / s).astype(np.float32))])
        # Per-token symmetric scale. uint8 with zero point 128 is the u8 x s8 form that VNNI multiplies.
        # max |x| per row as max(max x, -min x): two reductions of x instead of writing |x| out first; one
        # when x is a GELU's output (max(max x, GELU_FLOOR)): same scales, 2.5 % less time a run (AMX Xeon).
        lowest = (g.const("floor", np.array(floor, np.float32)) if floor is not None
                  else g.op("Neg", [g.op("ReduceMin", [x, self.axis1], keepdims=1)]))
        row_max = g.op("Max", [g.op("ReduceMax", [x, self.axis1], keepdims=1), lowest])  # (rows, 1)
        scale = g.op("Max", [g.op("Mul", [row_max, self.inv127]), self.tiny])
        x_q = g.op("QuantizeLinear", [x, scale, self.zero_points], axis=1, block_size=int(ws[0].shape[0]))
        outputs = []
        for w in ws:
            w_scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / self.levels  # per output channel
            w_q = np.clip(np.round(w / w_scale), -self.levels, self.levels).astype(np.int8)
            # The (rows, 1) token scales are the op's a_scale: it multiplies them in, instead of a Mul over
            # the whole (rows, out) output afterwards. Not combined with the op's bias input: ONNX Runtime
            # 1.31 gives wrong sums with both (mean cosine to fp32 0.82), so biases stay separate Adds.
            outputs.append(g.op(
                "MatMulIntegerToFloat",
                [x_q, g.const("w_q", w_q), scale, g.const("w_scale", w_scale.astype(np.float32)),
                 self.zp_scalar],
                domain="com.microsoft",
            ))
        return outputs

    def residual_norm(self, y: str, bias: np.ndarray, skip: str, ln: str) -> str:
        """LayerNorm(y + bias + skip). Add + LayerNormalization: ORT's fused SkipLayerNormalization kernel
        measured ~8x slower on this CPU (2.0 vs 0.26 ms for 1024 x 384)."""
        g = self.g
        summed = g.op("Add", [g.op("Add", [y, g.const("bias", bias)]), skip])
        return g.op(
            "LayerNormalization",
            [summed, g.const("ln_g", self.w[ln + ".weight"]), g.const("ln_b", self.w[ln + ".bias"])],
            axis=-1,
            epsilon=self.eps,
        )

    def build(self) -> Any:
        from onnx import TensorProto, helper

        g, w, H = self.g, self.w, self.hidden
        ids, mask = "input_ids", "attention_mask"
        self.axis1 = g.const("axis1", np.array([1], np.int64))
        self.inv127 = g.const("inv127", np.array(1.0 / 127.0, np.float32))
        self.tiny = g.const("tiny", np.array(1e-10, np.float32))
        self.zp_scalar = g.const("zp128", np.array(128, np.uint8))
        one_i = g.const("one_i", np.array([1], np.int64))

        # Embeddings. Token type is always 0 here, so its embedding is folded into the position table.
        positions = (
            w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
        )
        emb = g.op(
            "EmbedLayerNormalization",
            [
                ids,
                "",
                g.const("word_emb", w["embeddings.word_embeddings.weight"]),
                g.const("pos_emb", positions),
                "",
                g.const("emb_ln_g", w["embeddings.LayerNorm.weight"]),
                g.const("emb_ln_b", w["embeddings.LayerNorm.bias"]),
            ],
            n_out=2,
            domain="com.microsoft",
            epsilon=self.eps,
        )[0]
        rows_h = g.const("rows_h", np.array([-1, H], np.int64))
        batch_seq_h = g.op("Concat", [g.op("Shape", [ids]), g.const("h", np.array([H], np.int64))], axis=0)
        x = g.op("Reshape", [emb, rows_h])  # every per-token op works on (batch * seq, H)
        # (batch, 1, seq, seq) "may attend" mask, shared by every layer.
        keep = g.op(
            "Unsqueeze",
            [g.op("Cast", [mask], to=TensorProto.BOOL), g.const("axes12", np.array([1, 2], np.int64))],
        )
        seq = g.op("Shape", [ids], start=1, end=2)
        attn_mask = g.op(
            "Expand",
            [keep, g.op("Concat", [g.const("ones2", np.array([1, 1], np.int64)), seq, one_i], axis=0)],
        )
        if self.quantize:  # the (rows, 1) zero points shared by every QuantizeLinear
            rows1 = g.op("Concat", [g.op("Shape", [x], end=1), one_i], axis=0)
            self.zero_points = g.op("Expand", [g.const("zp128_2d", np.array([[128]], np.uint8)), rows1])

        for i in range(self.layers if self.stop_after is None else self.stop_after):
            p = f"encoder.layer.{i}."
            wq, wk, wv = (w[p + f"attention.self.{k}.weight"] for k in ("query", "key", "value"))
            bq, bv = w[p + "attention.self.query.bias"], w[p + "attention.self.value.bias"]
            # The key bias adds the same q.b_k to every score of a query row, which softmax ignores: dropped.
            # Softmax weights sum to 1, so the value bias passes straight through: folded into the out bias.
            w_out = w[p + "attention.output.dense.weight"]
            b_out = w[p + "attention.output.dense.bias"] + w_out @ bv
            q, k, v = self.project(x, [wq, wk, wv], f"{i}.qkv")
            q = g.op("Add", [q, g.const("bq", bq)])
            q, k, v = (g.op("Reshape", [t, batch_seq_h]) for t in (q, k, v))
            ctx = g.op("Attention", [q, k, v, attn_mask], q_num_heads=self.heads, kv_num_heads=self.heads)
            (attn,) = self.project(g.op("Reshape", [ctx, rows_h]), [w_out], f"{i}.attn_out")
            x = self.residual_norm(attn, b_out, x, p + "attention.output.LayerNorm")
            (h,) = self.project(x, [w[p + "intermediate.dense.weight"]], f"{i}.ffn_in")
            h = g.op(
                "BiasGelu", [h, g.const("ffn_in_b", w[p + "intermediate.dense.bias"])], domain="com.microsoft"
            )
            (out,) = self.project(h, [w[p + "output.dense.weight"]], f"{i}.ffn_out", floor=GELU_FLOOR)
            x = self.residual_norm(out, w[p + "output.dense.bias"], x, p + "output.LayerNorm")

        inputs = [
            helper.make_tensor_value_info(ids, TensorProto.INT32, ["batch", "seq"]),
            helper.make_tensor_value_info(mask, TensorProto.INT32, ["batch", "seq"]),
        ]
        if self.stop_after is not None:
            g.nodes.append(helper.make_node("Reshape", [x, batch_seq_h], ["states"], name="states"))
            outputs = [helper.make_tensor_value_info("states", TensorProto.FLOAT, ["batch", "seq", H])]
            return self._model(inputs, outputs)

        # Mean pooling over real tokens, then L2 normalization (sentence-transformers' Pooling + Normalize).
        tokens = g.op("Reshape", [x, batch_seq_h])
        m = g.op(
            "Unsqueeze",
            [g.op("Cast", [mask], to=TensorProto.FLOAT), g.const("axis2", np.array([2], np.int64))],
        )
        summed = g.op("ReduceSum", [g.op("Mul", [tokens, m]), self.axis1], keepdims=0)
        count = g.op(
            "Max",
            [g.op("ReduceSum", [m, self.axis1], keepdims=0), g.const("eps9", np.array(1e-9, np.float32))],
        )
        pooled = g.op("Div", [summed, count])
        norm = g.op(
            "Max",
            [
                g.op("ReduceL2", [pooled, self.axis1], keepdims=1),
                g.const("eps12", np.array(1e-12, np.float32)),
            ],
        )
        g.nodes.append(helper.make_node("Div", [pooled, norm], ["embedding"], name="normalize"))
        outputs = [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", H])]
        outputs += [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in self.probes]
        return self._model(inputs, outputs)

    def _model(self, inputs: list[Any], outputs: list[Any]) -> Any:
        from onnx import helper

        graph = helper.make_graph(self.g.nodes, "all_minilm_l6_v2", inputs, outputs, self.g.initializers)
        return helper.make_model(
            graph,
            ir_version=IR_VERSION,
            producer_name="relay.models.onnx_backend",
            opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        )


def _load_weights(model_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors.numpy import load_file

    weights = {k.removeprefix("bert."): v for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    config = json.loads((model_dir / "config.json").read_text())
    return weights, config


def calibrate(
    model_dir: Path, weights: dict[str, np.ndarray], config: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Per-channel |activation| maxima at the QKV and FFN-in projections' inputs, from the fp32 graph."""
    builder = _Builder(weights, config, quantize=False, probe=True)
    model = builder.build()
    sites = builder.smooth_sites(builder.layers)
    session = _session(model.SerializeToString())
    tokenizer = load_tokenizer(model_dir)
    maxima: dict[str, np.ndarray] = {}
    for text in CALIBRATION_TEXTS:  # one at a time: no padding rows in the statistics
        ids, mask = tokenize(tokenizer, [text])
        outs = session.run(builder.probes, {"input_ids": ids, "attention_mask": mask})
        for site, out in zip(sites, outs, strict=True):
            m = np.abs(out).max(axis=0)
            maxima[site] = np.maximum(maxima.get(site, m), m)
    return maxima


def build_model(
    model_dir: Path,
    backend: str,
    overrides: dict[str, np.ndarray] | None = None,
    stop_after: int | None = None,
) -> bytes:
    """The graph for ``backend`` from the packaged weights, with ``overrides`` (same names and shapes, e.g. a
    router's fine-tuned top layers) replacing some of them; ``stop_after`` outputs token states instead."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown ONNX backend {backend!r}; expected one of {BACKENDS}")
    weights, config = _load_weights(model_dir)
    for name, value in (overrides or {}).items():
        if name not in weights or weights[name].shape != np.shape(value):
            raise ValueError(f"override {name!r} does not match a weight of the packaged model")
        weights[name] = np.asarray(value, dtype=np.float32)
    smooth = calibrate(model_dir, weights, config) if backend == "onnx-int8" else None
    model = _Builder(
        weights, config, quantize=backend == "onnx-int8", smooth=smooth, stop_after=stop_after,
        levels=weight_levels(),
    ).build()
    import onnx

    onnx.checker.check_model(model)
    return model.SerializeToString()


def load_or_build(
    model_dir: Path, backend: str, directory: Path | None = None
) -> tuple[bytes | str, Path | None]:
    """What to give InferenceSession: the cached file's path, or the bytes when the cache is not writable."""
    path = artefact_path(model_dir, backend, directory)
    if path.exists():
        return str(path), path
    log.info("building the %s encoder graph at %s", backend, path)
    data = build_model(model_dir, backend)
    try:
        write_atomically(path, data)
        _remove_stale(path, backend)
    except OSError as exc:
        log.warning("model cache %s is not writable (%s); using the graph from memory", path.parent, exc)
        return data, None
    return str(path), path


# -- running -------------------------------------------------------------------------------------------------
def _session(model: bytes | str) -> Any:
    """A session whose runs each use only the calling thread: OnnxEncoder runs several at once instead."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_tokenizer(model_dir: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    max_len = int(
        json.loads((model_dir / "sentence_bert_config.json").read_text()).get("max_seq_length", 256)
    )
    tokenizer.enable_truncation(max_length=max_len)  # sentence-transformers truncates at max_seq_length
    tokenizer.no_padding()  # we pad each batch to its own longest text
    return tokenizer


def tokenize(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return pad(encode_tokens(tokenizer, texts))


def encode_tokens(tokenizer: Any, texts: Sequence[str]) -> list[Any]:
    return tokenizer.encode_batch(list(texts)) if len(texts) > 1 else [tokenizer.encode(texts[0])]


def pad(encodings: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest in this batch (dynamic padding). Returns int32 ids and mask."""
    longest = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), longest), dtype=np.int32)
    mask = np.zeros((len(encodings), longest), dtype=np.int32)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
    return ids, mask


class OnnxEncoder:
    """Runs the cached graph. Not locked here: models.encoder.Encoder serializes and batches the callers.

    Each run of the graph is single-threaded; a call's runs are taken by ``threads`` lanes that run at the
    same time, one per core. ONNX Runtime's own intra-op threads meet at a barrier after every operator,
    so one thread held up (its core taken by the API or a worker's Python for a moment) stalls the other;
    lanes never wait for each other. Single texts are faster too: no thread is woken for a 16-token run
    (bench/README.md)."""

    def __init__(
        self, model_dir: Path, backend: str, threads: int, batch_size: int = 64, graph: bytes | None = None
    ) -> None:
        """``graph``: run this graph (built by build_model) instead of the cached default one."""
        self.backend = backend
        self.batch_size = batch_size
        self.lanes = max(1, threads)
        self.artefact: Path | None = None
        if graph is not None:
            self.session = _session(graph)
        else:
            self.session = self._cached_session(model_dir, backend)
        self.tokenizer = load_tokenizer(model_dir)
        self.output = self.session.get_outputs()[0].name
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _cached_session(self, model_dir: Path, backend: str) -> Any:
        model, self.artefact = load_or_build(model_dir, backend)
        try:
            return _session(model)
        except Exception:  # an unreadable cached file (truncated by a full disk, say): rebuild it once
            if self.artefact is None:
                raise
            log.warning("cached encoder graph %s could not be loaded; rebuilding", self.artefact)
            try:
                self.artefact.unlink(missing_ok=True)
            except OSError as exc:  # a read-only cache: the graph is built in memory, as when it cannot be written
                log.warning("could not remove %s (%s); using a graph built in memory", self.artefact, exc)
                self.artefact = None
                return _session(build_model(model_dir, backend))
            model, self.artefact = load_or_build(model_dir, backend)
            return _session(model)

    def _lane_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.lanes - 1, thread_name_prefix="encoder-lane")
            return self._pool

    def _runs(self, texts: Sequence[str], output: str) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
        """(rows of ``texts``, attention mask, output) per run; callers put the rows back in order.

        Texts are sorted by token count and cut into runs of at most ``batch_size`` whose padding adds at most
        PAD_WASTE to the real tokens (padding is computed like any token, and a run of mixed lengths, one
        70-token text among 20-token ones, otherwise spends most of its time on it) and whose size is at most
        RUN_TOKENS tokens. Measured on 32 task texts of 18-74 tokens: 104 -> 173 texts/s (bench/README.md).

        The lanes take the runs one at a time from a shared list, the longest first, until none is left. A lane
        whose core is shared (a worker's Python runs on one core next to the encoder) takes fewer; with a fixed
        share each, the other lane sat idle at the end of every call until the slowed one was done."""
        if not texts:
            return []
        encodings = encode_tokens(self.tokenizer, texts)
        lengths = [len(e.ids) for e in encodings]
        order = sorted(range(len(texts)), key=lengths.__getitem__)
        lanes = min(self.lanes, max(1, len(texts) // MIN_LANE_TEXTS))
        # a small call is still cut into a run per lane, so that a few texts are encoded on every core
        run_tokens = min(RUN_TOKENS, max(lengths[order[-1]], -(-sum(lengths) // lanes)))
        chunks = list(self._chunks(order, lengths, run_tokens))[::-1]  # longest first, shortest last
        lanes = min(lanes, len(chunks))
        if lanes == 1:
            return [self._run(chunk, encodings, output) for chunk in chunks]
        taken = itertools.count()  # next(): atomic under the GIL, so each run is taken by exactly one lane

        def lane() -> list[tuple[list[int], np.ndarray, np.ndarray]]:
            done = []
            while (k := next(taken)) < len(chunks):
                done.append(self._run(chunks[k], encodings, output))
            return done

        others = [self._lane_pool().submit(lane) for _ in range(1, lanes)]
        runs = lane()  # the calling thread is a lane too
        for other in others:
            runs.extend(other.result())
        return runs

    def _chunks(self, rows: list[int], lengths: Sequence[int], run_tokens: int) -> Iterator[list[int]]:
        """Cut ``rows`` (sorted by token count, ``lengths[i]`` each) into runs of at most ``run_tokens``
        tokens; see _runs."""
        chunk: list[int] = []
        real = 0
        for i in rows:
            n = lengths[i]  # the longest so far: the run pads to it
            too_wasteful = n * (len(chunk) + 1) > (real + n) * (1 + PAD_WASTE)
            too_big = n * (len(chunk) + 1) > run_tokens
            if chunk and (len(chunk) >= self.batch_size or too_wasteful or too_big):
                yield chunk
                chunk, real = [], 0
            chunk.append(i)
            real += n
        yield chunk

    def _run(self, chunk: list[int], encodings: Sequence[Any],
             output: str) -> tuple[list[int], np.ndarray, np.ndarray]:
        ids, mask = pad([encodings[i] for i in chunk])
        return chunk, mask, self.session.run([output], {"input_ids": ids, "attention_mask": mask})[0]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for chunk, _, vectors in self._runs(texts, "embedding"):
            out[chunk] = vectors
        return out

    def states(self, texts: Sequence[str]) -> list[np.ndarray]:
        """For a graph built with ``stop_after``: each text's token states, (tokens, hidden) float32."""
        if self.output != "states":
            raise TypeError("this graph outputs sentence vectors, not token states")
        out: list[np.ndarray] = [np.empty((0, self.dim), np.float32)] * len(texts)
        for chunk, mask, states in self._runs(texts, "states"):
            for row, i in enumerate(chunk):
                out[i] = np.ascontiguousarray(states[row, : int(mask[row].sum())])
        return out
