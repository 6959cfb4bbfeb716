"""The encoder's fast backends: the same vectors as fp32 sentence-transformers (within a cosine bar), a cached
graph that is rebuilt when missing or stale and reused otherwise, and thread-safe batching of callers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from models import encoder as encoder_module
from models import onnx_backend
from models.encoder import Encoder, packaged_model_dir

pytestmark = pytest.mark.model

VARIED = [
    "Build a responsive landing page for my bakery with an online order form.",
    "Our WordPress site shows a white screen after a plugin update, please fix it today.",
    "Set up a Shopify store with sixty products and Stripe payments.",
    "Native iOS app for booking appointments at a hair salon.",
    "Design a modern logo for a craft brewery.",
    "Create a brochure and business cards for a dental clinic.",
    "Redesign the onboarding screens of our fitness app.",
    "Write ten SEO blog posts about sustainable gardening.",
    "Translate a twenty-page software contract from German into English.",
    "Proofread my thesis in economics, about two hundred pages.",
    "Catch up on two years of bookkeeping for a cleaning company.",
    "File my tax return, I moved countries in the middle of the year.",
    "Type five hundred handwritten survey forms into a spreadsheet.",
    "Build a dashboard of monthly sales by region in Google Sheets.",
    "A virtual assistant to manage my calendar and inbox ten hours a week.",
    "Handle our customer support chat during the night shift.",
    "Run our Instagram and Facebook pages with three posts a week.",
    "Improve our search ranking for emergency plumber in Manchester.",
    "Edit a three-minute promo video from conference footage.",
    "Retouch fifty product photos and remove the backgrounds.",
    "Record a British voice-over for a two-minute explainer.",
    "Review my apartment lease before I sign it.",
    "Maths tutoring for my daughter twice a week online.",
    "The toilet keeps running and the sink drains slowly.",
    "Install three ceiling lights and replace a faulty breaker.",
    "Deep clean a two-bedroom flat after the tenants moved out.",
    "Help me move a sofa and assemble a wardrobe on Saturday.",
    "my printer wont connect to the laptop anymore",
    "pls fix my excel formula its giving #REF",
    "website down!!! customers cant pay",
    "Need someone asap",
    "hi",
    "?",
    "ok thanks",
    "How much would it cost?",
    "Can you do it by tomorrow morning?",
    "I'd like a quote for the whole project including materials.",
    "Ich brauche einen Übersetzer für Verträge.",
    "¿Puedes ayudarme con mi declaración de impuestos?",
    "Je cherche un photographe pour un mariage en juin.",
    "日本語のウェブサイトを作りたい",
    "asdf qwer zxcv",
    "The quick brown fox jumps over the lazy dog.",
    "A volunteer portal where parents register children, sign consent forms and get text reminders; it must "
    "work with Google Workspace and with screen readers.",
    "Python script that scrapes prices from three shops every morning and emails me a CSV.",
    "Migrate forty gigabytes of email to Microsoft 365 without downtime.",
    "Write a wedding speech for my brother, funny but heartfelt.",
    "Compose looping background music for a mobile game.",
    "Design packaging for a line of organic dog treats.",
    "Transcribe ten hours of research interviews.",
    "Long request: " + "the website, the shop, the newsletter and the photos all need work. " * 40,
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELAY_MODEL_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def reference(cache: Path) -> np.ndarray:
    return Encoder(backend="torch").encode(VARIED)


@pytest.fixture(scope="module")
def int8(cache: Path) -> Encoder:
    return Encoder(backend="onnx-int8")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_default_backend_is_int8_and_keeps_the_model_id(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_ENCODER_BACKEND", raising=False)
    enc = Encoder()
    assert enc.backend == "onnx-int8"
    assert enc.model_id == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize("backend", ["onnx-int8", "onnx", "torch"])
def test_rows_are_unit_length_float32(backend: str, cache: Path, int8: Encoder) -> None:
    enc = int8 if backend == "onnx-int8" else Encoder(backend=backend)
    vectors = enc.encode(VARIED[:7])
    assert vectors.dtype == np.float32 and vectors.shape == (7, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    empty = enc.encode([])
    assert empty.dtype == np.float32 and empty.shape == (0, 384)


def test_int8_matches_fp32_sentence_transformers(int8: Encoder, reference: np.ndarray) -> None:
    cos = cosines(int8.encode(VARIED), reference)
    assert cos.mean() >= 0.995, f"mean cosine {cos.mean():.4f}"
    assert cos.min() >= 0.98, f"worst cosine {cos.min():.4f} for {VARIED[int(cos.argmin())]!r}"


def test_fp32_onnx_matches_sentence_transformers(cache: Path, reference: np.ndarray) -> None:
    cos = cosines(Encoder(backend="onnx").encode(VARIED), reference)
    assert cos.min() >= 0.9999


def test_a_text_gets_the_same_vector_alone_and_in_any_batch(int8: Encoder) -> None:
    # Per-token activation scales: batch neighbours (and their padding) do not change a text's vector.
    batched = int8.encode(VARIED)
    alone = np.stack([int8.encode([t])[0] for t in VARIED])
    reversed_batch = int8.encode(VARIED[::-1])[::-1]
    np.testing.assert_allclose(alone, batched, atol=1e-5)
    np.testing.assert_allclose(reversed_batch, batched, atol=1e-5)


def test_rejects_a_bare_string_and_unknown_backends(int8: Encoder) -> None:
    with pytest.raises(TypeError):
        int8.encode("a string, not a list")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown encoder backend"):
        Encoder(backend="tpu")


def test_cache_is_reused_and_rebuilt_when_deleted_stale_or_corrupt(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RELAY_MODEL_CACHE", str(tmp_path))
    stale = tmp_path / "all-MiniLM-L6-v2.onnx-int8.0123456789abcdef0123.onnx"
    stale.write_bytes(b"left by an older onnxruntime")
    artefact = onnx_backend.artefact_path(packaged_model_dir(), "onnx-int8")
    assert artefact.parent == tmp_path and not artefact.exists()

    builds: list[str] = []
    real_build = onnx_backend.build_model

    def counting_build(model_dir: Path, backend: str) -> bytes:
        builds.append(backend)
        return real_build(model_dir, backend)

    monkeypatch.setattr(onnx_backend, "build_model", counting_build)
    first = Encoder(backend="onnx-int8")
    assert builds == ["onnx-int8"] and artefact.exists()
    assert not stale.exists(), "the stale artefact of the same backend is removed"
    assert not list(tmp_path.glob("*.tmp")), "no temporary files are left behind"
    expected = first.encode(VARIED[:5])

    second = Encoder(backend="onnx-int8")  # reused: no second build
    assert builds == ["onnx-int8"]
    np.testing.assert_allclose(second.encode(VARIED[:5]), expected, atol=1e-6)

    artefact.unlink()  # deleted: rebuilt
    third = Encoder(backend="onnx-int8")
    assert builds == ["onnx-int8", "onnx-int8"] and artefact.exists()
    np.testing.assert_allclose(third.encode(VARIED[:5]), expected, atol=1e-6)

    artefact.write_bytes(b"truncated")  # unreadable: rebuilt
    fourth = Encoder(backend="onnx-int8")
    assert len(builds) == 3
    np.testing.assert_allclose(fourth.encode(VARIED[:5]), expected, atol=1e-6)


def test_a_corrupt_graph_in_a_read_only_cache_is_replaced_by_one_built_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_MODEL_CACHE", str(tmp_path))
    artefact = onnx_backend.artefact_path(packaged_model_dir(), "onnx-int8")
    artefact.write_bytes(b"truncated")
    real_unlink = Path.unlink

    def read_only(self: Path, missing_ok: bool = False) -> None:
        if self.parent == tmp_path:
            raise PermissionError(13, "Read-only file system", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only)  # root ignores file modes: the failure is simulated
    encoder = Encoder(backend="onnx-int8")
    vectors = encoder.encode(VARIED[:3])
    assert vectors.shape == (3, encoder.dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert artefact.read_bytes() == b"truncated"  # left as it was: it could not be replaced


def test_a_tuned_router_is_named_by_the_encoders_weights_and_graph_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved tuned model's layers sit on the base encoder's lower layers: new weights or a new graph builder
    (same model name) must not find the old file."""
    from types import SimpleNamespace

    from routing.tuned import fingerprint

    key = Encoder.build_key.func(SimpleNamespace(_model_dir=packaged_model_dir()))  # type: ignore[attr-defined]
    assert key == onnx_backend.artefact_key(packaged_model_dir(), "onnx")
    monkeypatch.setattr(onnx_backend, "BUILDER_VERSION", onnx_backend.BUILDER_VERSION + ".next")
    rebuilt = onnx_backend.artefact_key(packaged_model_dir(), "onnx")
    assert rebuilt != key

    def named(build_key: str) -> str:
        encoder = SimpleNamespace(model_id="sentence-transformers/all-MiniLM-L6-v2", backend="onnx-int8",
                                  build_key=build_key)
        return fingerprint(["a", "b"], ["x", "y"], encoder, True)

    assert named(key) == named(key) and named(key) != named(rebuilt)

    def no_onnx(*_args: object) -> str:
        raise ImportError("libonnxruntime.so: cannot open shared object file")

    monkeypatch.setattr(onnx_backend, "artefact_key", no_onnx)  # the torch fallback of a broken install
    fallback = Encoder.build_key.func(SimpleNamespace(_model_dir=packaged_model_dir()))  # type: ignore[attr-defined]
    assert fallback.startswith("torch-") and fallback not in (key, rebuilt)


def test_cache_key_follows_the_weights_and_the_backend(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"weights v1")
    a = onnx_backend.artefact_key(model_dir, "onnx-int8")
    assert onnx_backend.artefact_key(model_dir, "onnx") != a
    (model_dir / "model.safetensors").write_bytes(b"weights v2")
    assert onnx_backend.artefact_key(model_dir, "onnx-int8") != a


def test_int8_weights_use_seven_bits_where_u8_s8_products_would_saturate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAY_INT8_WEIGHT_LEVELS", raising=False)
    assert onnx_backend.weight_levels("x86_64", {"avx", "avx2", "fma"}) == 63
    assert onnx_backend.weight_levels("x86_64", {"avx2", "avx512f", "avx512_vnni"}) == 127
    assert onnx_backend.weight_levels("x86_64", {"avx2", "avx_vnni"}) == 127
    assert onnx_backend.weight_levels("aarch64", set()) == 127
    # a graph built for one range is never reused on a machine that needs the other
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv("RELAY_INT8_WEIGHT_LEVELS", "63")
    seven_bit = onnx_backend.artefact_key(model_dir, "onnx-int8")
    monkeypatch.setenv("RELAY_INT8_WEIGHT_LEVELS", "127")
    assert onnx_backend.artefact_key(model_dir, "onnx-int8") != seven_bit
    monkeypatch.setenv("RELAY_INT8_WEIGHT_LEVELS", "255")
    with pytest.raises(ValueError, match="63 or 127"):
        onnx_backend.weight_levels()


def run_concurrently(fn: Callable[[int], None], n: int) -> None:
    """fn(0) .. fn(n - 1), each on its own thread; a failure in any of them fails the test."""
    with ThreadPoolExecutor(max_workers=n) as pool:
        list(pool.map(fn, range(n)))


def test_concurrent_callers_get_the_same_vectors_as_sequential_calls(int8: Encoder) -> None:
    requests = [VARIED[i : i + 1 + i % 3] for i in range(len(VARIED) - 3)]
    sequential = [int8.encode(r) for r in requests]
    results: list[np.ndarray | None] = [None] * len(requests)
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(k, len(requests), 8):
            results[i] = int8.encode(requests[i])

    run_concurrently(worker, 8)
    for got, want in zip(results, sequential, strict=True):
        assert got is not None and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


class _RecordingSession:
    """Wraps an ONNX Runtime session: which threads run it, and how many runs are in flight at once."""

    def __init__(self, session: object) -> None:
        self._session = session
        self._lock = threading.Lock()
        self.active = 0
        self.most_at_once = 0
        self.threads: set[int] = set()

    def run(self, *args: object, **kwargs: object) -> object:
        with self._lock:
            self.active += 1
            self.most_at_once = max(self.most_at_once, self.active)
            self.threads.add(threading.get_ident())
        try:
            time.sleep(0.005)  # long enough for the other lane to start its run meanwhile
            return self._session.run(*args, **kwargs)  # type: ignore[attr-defined]
        finally:
            with self._lock:
                self.active -= 1

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)


def test_a_call_is_spread_over_one_single_threaded_lane_per_core(cache: Path) -> None:
    impl = onnx_backend.OnnxEncoder(packaged_model_dir(), "onnx-int8", threads=2)
    plain = impl.encode(VARIED)
    impl.session = recording = _RecordingSession(impl.session)

    np.testing.assert_allclose(impl.encode(VARIED), plain, atol=1e-6)
    assert recording.most_at_once == 2 and len(recording.threads) == 2
    assert threading.get_ident() in recording.threads, "the calling thread is one of the lanes"

    recording.threads.clear()
    recording.most_at_once = 0
    impl.encode(VARIED[:3])  # too few texts to share: no hand-over to another thread
    assert recording.threads == {threading.get_ident()} and recording.most_at_once == 1
    assert impl.session.get_session_options().intra_op_num_threads == 1


def test_a_lane_slowed_down_takes_fewer_runs_and_the_other_does_the_rest(cache: Path) -> None:
    """Lanes take runs from a shared list: when the calling thread's core is busy with something else (a
    worker's Python), the other lane does more of the call instead of waiting for it at the end."""
    impl = onnx_backend.OnnxEncoder(packaged_model_dir(), "onnx-int8", threads=2)
    texts = [f"Request {i}: reconcile the {i}th batch of supplier invoices in Xero" for i in range(300)]
    plain = impl.encode(texts)
    session, caller = impl.session, threading.get_ident()
    runs: dict[str, int] = {"caller": 0, "other": 0}

    class SlowOnCaller:
        def run(self, *args: object, **kwargs: object) -> object:
            if threading.get_ident() == caller:
                runs["caller"] += 1
                time.sleep(0.5)  # this core is taken by other work
            else:
                runs["other"] += 1
            return session.run(*args, **kwargs)

    impl.session = SlowOnCaller()  # type: ignore[assignment]
    np.testing.assert_allclose(impl.encode(texts), plain, atol=1e-6)
    assert runs["caller"] >= 1 and runs["other"] > 2 * runs["caller"], runs


class _SlowFake:
    """Stands in for a backend: records each forward pass, and is slow enough for callers to queue up."""

    backend = "fake"
    dim = 3

    def __init__(self) -> None:
        self.passes: list[int] = []
        self.active = 0
        self.overlapped = False

    def encode(self, texts: list[str]) -> np.ndarray:
        self.active += 1
        self.overlapped |= self.active > 1
        self.passes.append(len(texts))
        time.sleep(0.02)
        self.active -= 1
        if "boom" in texts:
            raise RuntimeError("backend failed")
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)


def test_waiting_callers_join_one_pass_and_passes_never_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _SlowFake()
    monkeypatch.setattr(encoder_module, "_TorchBackend", lambda model_dir, batch_size: fake)
    enc = Encoder(backend="torch")
    assert enc.backend == "fake"
    texts = [[("x" * (k + 1))] * (1 + k % 2) for k in range(12)]
    results: list[np.ndarray | None] = [None] * 12

    def call(k: int) -> None:
        results[k] = enc.encode(texts[k])

    run_concurrently(call, 12)
    assert not fake.overlapped
    assert sum(fake.passes) == sum(len(t) for t in texts)
    assert len(fake.passes) < 12, "callers that queued behind a pass were batched together"
    for k, got in enumerate(results):
        assert got is not None and got.shape == (len(texts[k]), 3)
        assert (got[:, 0] == k + 1).all(), "each caller gets its own rows back"

    # A failing pass fails every caller in it, and the encoder keeps working afterwards.
    with pytest.raises(RuntimeError, match="backend failed"):
        enc.encode(["boom"])
    assert enc.encode(["ok"]).shape == (1, 3)


def test_falls_back_to_torch_when_onnx_cannot_load(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAY_ENCODER_BACKEND", raising=False)

    def broken(*args: object, **kwargs: object) -> None:
        raise ImportError("onnxruntime missing")

    monkeypatch.setattr(onnx_backend, "OnnxEncoder", broken)
    assert Encoder().backend == "torch"
    with pytest.raises(ImportError):
        Encoder(backend="onnx-int8")  # asked for by name: loud
    assert encoder_module.DEFAULT_BACKEND == "onnx-int8"


def test_token_states_graph_and_weight_overrides_reproduce_the_encoder(cache: Path) -> None:
    """The graphs the router's fine-tuning uses: token states after N layers (mean-pooled after all six they
    are the sentence vector), and the full graph with some weights replaced."""
    from safetensors.numpy import load_file

    model_dir = packaged_model_dir()
    full = onnx_backend.OnnxEncoder(model_dir, "onnx", threads=1)
    states = onnx_backend.OnnxEncoder(
        model_dir, "onnx", threads=1, graph=onnx_backend.build_model(model_dir, "onnx", stop_after=6)
    )
    texts = VARIED[:6]
    per_text = states.states(texts)
    assert [s.shape[1] for s in per_text] == [384] * len(texts)
    assert [s.shape[0] for s in per_text] == [len(full.tokenizer.encode(t).ids) for t in texts]
    pooled = np.stack([s.mean(axis=0) for s in per_text])
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(pooled, full.encode(texts), atol=1e-5)
    with pytest.raises(TypeError):
        full.states(texts)

    weights = {k.removeprefix("bert."): v for k, v in load_file(str(model_dir / "model.safetensors")).items()}
    name = "encoder.layer.5.output.dense.weight"
    same = onnx_backend.OnnxEncoder(model_dir, "onnx", threads=1,
                                    graph=onnx_backend.build_model(model_dir, "onnx", {name: weights[name]}))
    np.testing.assert_allclose(same.encode(texts), full.encode(texts), atol=1e-6)
    changed = onnx_backend.OnnxEncoder(model_dir, "onnx", threads=1,
                                       graph=onnx_backend.build_model(model_dir, "onnx", {name: weights[name] * 0}))
    assert np.abs(changed.encode(texts) - full.encode(texts)).max() > 1e-3
    with pytest.raises(ValueError):
        onnx_backend.build_model(model_dir, "onnx", {"encoder.layer.5.no_such.weight": weights[name]})
    with pytest.raises(ValueError):
        onnx_backend.build_model(model_dir, "onnx", {name: weights[name][:10]})


def test_the_gelu_floor_bounds_gelu_and_quantizes_exactly_like_both_reductions(
        int8: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The FFN-out projection's per-token scale takes max |x| as max(max x, GELU_FLOOR): a GELU's output is
    never below -GELU_FLOOR, so the row's minimum need not be read. Same vectors as reading it."""
    import torch

    assert torch.nn.functional.gelu(torch.linspace(-6, 2, 2_000_001, dtype=torch.float64)).min() \
        >= -onnx_backend.GELU_FLOOR
    model_dir = packaged_model_dir()
    monkeypatch.setattr(onnx_backend, "GELU_FLOOR", None)  # both reductions, as before
    both = onnx_backend.OnnxEncoder(model_dir, "onnx-int8", threads=1,
                                    graph=onnx_backend.build_model(model_dir, "onnx-int8"))
    # (runs grouped differently round differently, by ~1e-7; the floor on an input that is not a GELU's
    # clips its negative values: differences of ~2e-2)
    np.testing.assert_allclose(both.encode(VARIED), int8.encode(VARIED), atol=1e-6)
    weights, config = onnx_backend._load_weights(model_dir)
    with pytest.raises(ValueError, match="smoothed"):  # divided by channel scales, the floor would be wrong
        onnx_backend._Builder(weights, config, quantize=True).project(
            "x", [weights["encoder.layer.0.attention.self.query.weight"]], "0.qkv", floor=0.17)
