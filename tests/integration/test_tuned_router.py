"""The tuned routing model (top encoder layers fine-tuned per taxonomy) with the real local model and the demo
taxonomy: it routes, abstains on kinds of request it has no route for, survives a save/load, and the live app
switches to it once the scheduled refit job has fitted it."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient

from marketplace.settings import Settings
from models import load_encoder
from models.tuning import TuningConfig
from routing.router import Router
from routing.tuned import RoutingModel, calibration_rounds, fit_routing_model, tunable
from tests.conftest import Api, wait_until

pytestmark = pytest.mark.model

TAXONOMY = json.loads((Path(__file__).parents[2] / "marketplace/demo/taxonomy.json").read_text())
LABELS = [c["slug"] for c in TAXONOMY["categories"] for _ in c["examples"]]
TEXTS = [e for c in TAXONOMY["categories"] for e in c["examples"]]
SLUGS = sorted(set(LABELS))  # category indices in a fit are positions in this

IN_SCOPE = {  # new wordings, not examples
    "My kitchen tap drips all night and the pipe under the sink is wet": "plumbing",
    "We need our quarterly VAT return and self-assessment filed": "tax-preparation",
    "Cut our 40 minutes of conference footage into a 3 minute highlight reel": "video-editing",
    "Put together two wardrobes and a bed frame from flat-pack boxes": "moving-furniture-assembly",
    "Turn our German product manual into English and French": "translation",
}
UNSEEN_KINDS = [  # nothing on this marketplace does these
    "What will the weather be like in Paris tomorrow?",
    "Set an alarm for 6 am",
    "How many calories are in a banana?",
    "Tell me a joke about penguins",
]


# Fewer steps than the product's default (tests check behaviour, bench/README.md measures quality).
LIGHT = TuningConfig(min_steps=80)


TUNING_RUNS: list[tuple[int, int]] = []  # (examples, categories) of each tuning run of the fixture's fit
HELD_OUT: list[frozenset[str]] = []  # the categories each calibration run held out


# Session-scoped: a test here also uses the database fixtures, which run once per database backend, and pytest
# groups tests by backend across modules; a module-scoped fit was torn down and fitted again for each group (and
# its runs recorded again: 11 for 4).
@pytest.fixture(scope="session")
def tuned() -> RoutingModel:
    import models.tuning

    real = models.tuning.tune_top_layers
    real_holdout = Router.holdout
    TUNING_RUNS.clear()
    HELD_OUT.clear()

    def recording(states: list, labels: Any, n_classes: int, config: Any) -> Any:
        TUNING_RUNS.append((len(states), n_classes))
        return real(states, labels, n_classes, config)

    def holdout(self: Router, y: Any, n_classes: int, rng: Any) -> Any:
        split = real_holdout(self, y, n_classes, rng)
        HELD_OUT.append(frozenset(SLUGS[i] for i in np.unique(y[split.out_of_scope])))
        return split

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.tuning, "tune_top_layers", recording)
        mp.setattr(Router, "holdout", holdout)
        return fit_routing_model(LABELS, TEXTS, load_encoder(), tune=True, config=LIGHT)


def test_tuned_model_routes_new_wordings(tuned: RoutingModel) -> None:
    assert tuned.tuned and "+tuned:" in tuned.model_id
    for text, slug in IN_SCOPE.items():
        decision = tuned.decide(text)
        assert decision.primary == slug, (text, decision.ranking)


def test_tuned_model_abstains_on_unseen_kinds_of_request(tuned: RoutingModel) -> None:
    abstained = [text for text in UNSEEN_KINDS if tuned.decide(text).abstain]
    assert len(abstained) >= 3, abstained  # thresholds come from held-out categories, not from these
    assert 0 < tuned.router.threshold < 1


def test_thresholds_come_from_a_run_that_did_not_see_the_held_out_examples(tuned: RoutingModel) -> None:
    # Calibrated on its own training examples a tuned encoder would be sure of every one of them and never
    # abstain. So the thresholds come from a first run without a fifth of the categories and a fifth of the
    # other examples; the last run, on everything, decides.
    # A taxonomy this small gets several such runs, each holding out other categories (one draw of held-out
    # categories moves the thresholds a lot), and the thresholds are read from all of them together.
    n_categories = len(set(LABELS))
    *calibration, final = TUNING_RUNS
    assert len(calibration) == calibration_rounds(len(TEXTS), LIGHT, tuned.router.holdout_rounds) == 3
    for examples, categories in calibration:
        assert categories == n_categories - n_categories // 5
        assert examples < 0.8 * len(TEXTS) * categories / n_categories + 20
    assert len(HELD_OUT) == 3 and len(set(HELD_OUT)) == 3
    assert all(len(held) == n_categories // 5 for held in HELD_OUT)
    assert final == (len(TEXTS), n_categories)
    router = tuned.router
    probs = np.array([router.scores(v) for v in router._examples])
    assert (probs.max(axis=1) < router.threshold).mean() < 0.2  # the examples themselves mostly pass
    assert tuned.fit_seconds > 0


def test_saved_model_decides_exactly_like_the_fitted_one(tuned: RoutingModel, tmp_path: Path) -> None:
    path = tmp_path / "router.npz"
    tuned.save(path)
    loaded = RoutingModel.load(path, load_encoder())
    assert loaded.tuned and loaded.fingerprint == tuned.fingerprint
    for text in [*IN_SCOPE, *UNSEEN_KINDS]:
        a, b = tuned.decide(text), loaded.decide(text)
        assert (a.primary, a.ranking) == (b.primary, b.ranking)
    np.testing.assert_allclose(tuned.encode(TEXTS[:8]), loaded.encode(TEXTS[:8]), atol=1e-6)


def test_small_taxonomies_fall_back_to_the_frozen_model() -> None:
    labels = ["plumbing"] * 3 + ["translation"] * 3
    texts = ["Fix a leaking pipe", "Unblock the drain", "Replace a tap",
             "Translate a letter into German", "Spanish subtitles for a film", "Translate our website"]
    model = fit_routing_model(labels, texts, load_encoder(), tune=True)
    assert not model.tuned and model.model_id == load_encoder().model_id
    with pytest.raises(ValueError):
        model.save(Path("unused.npz"))


def test_taxonomies_with_few_examples_per_category_keep_the_frozen_model() -> None:
    # enough categories to calibrate a tuned model, but five examples each: tuning would overfit them
    few = [(c["slug"], e) for c in TAXONOMY["categories"] for e in c["examples"][:5]]
    model = fit_routing_model([s for s, _ in few], [t for _, t in few], load_encoder(), tune=True)
    assert not model.tuned
    drip = "My kitchen tap drips all night and the pipe under the sink is wet"
    assert model.decide(drip).primary == "plumbing"
    assert tunable([len(c["examples"]) for c in TAXONOMY["categories"]])  # the demo's 14 each are tuned
    assert not tunable([14] * 4) and not tunable([9] * 30) and tunable([10] * 5)


def test_the_engine_plans_no_refit_for_a_taxonomy_with_few_examples_per_category(
    db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marketplace.domain.routing.engine import RoutingEngine
    from routing.taxonomy import CategorySpec, Taxonomy

    engine = RoutingEngine(cache=tmp_path)
    with db.session(readonly=True) as session:
        demo = engine.taxonomy(session)
        assert engine.refit_plan(session) is not None  # the demo's 14 examples per category are tuned
        five = (CategorySpec(c.slug, c.name, c.description, c.examples[:5]) for c in demo.categories)
        few = Taxonomy(tuple(five))
        monkeypatch.setattr(engine, "taxonomy", lambda _session: few)
        assert engine.refit_plan(session) is None and not engine.needs_tuning(session)


def test_scheduled_refit_switches_the_live_app_to_the_tuned_model(
    settings: Settings, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from marketplace.asgi import build
    from marketplace.db.models import Category, CategoryExample
    from marketplace.domain.routing import engine as engine_module
    from workers import scheduler

    engine = engine_module.RoutingEngine(cache=tmp_path, tuning=LIGHT)
    monkeypatch.setattr(engine_module, "_engine", engine)
    monkeypatch.setattr(scheduler, "_refit_asked", {})
    stale = tmp_path / "from-an-older-taxonomy.npz"
    stale.write_bytes(b"old")
    with TestClient(build(settings.with_(router_tuning=True))) as client:
        api = Api(client)
        # The scheduler's first tick (in the background, at start) finds no tuned model for this taxonomy and
        # asks for one; the refit_router job fits and saves it.
        deadline = time.monotonic() + 600
        while not [p for p in tmp_path.glob("*.npz") if p != stale] and time.monotonic() < deadline:
            api.drain()
            time.sleep(0.2)
        saved = list(tmp_path.glob("*.npz"))
        assert len(saved) == 1 and saved[0] != stale  # and only the current taxonomy's model is kept
        assert scheduler.run_once()["refits_requested"] == 0  # nothing left to fit

        _, customer_h = api.user("customer")
        api.provider(["plumbing"], "Plumber", "Leaks, taps, drains and boilers.")
        task_id = api.post_task(customer_h, "Dripping tap", "The bathroom tap keeps dripping, please fix it.")
        api.drain()
        routing = client.get(f"/api/v1/tasks/{task_id}", headers=customer_h).json()["routing"]
        assert routing["evidence"]["tuned"] is True
        assert "+tuned:" in routing["evidence"]["model_id"]
        assert routing["categories"][0]["slug"] == "plumbing"

        # A new labelled example is a new taxonomy version: it needs its own tuned model.
        with db.session() as session:
            plumbing = session.query(Category).filter_by(slug="plumbing").one()
            session.add(CategoryExample(category_id=plumbing.id, text="Replace the washer in a leaking tap",
                                        source="staff"))
        with db.session() as session:
            assert engine.refit_plan(session) is not None and engine.needs_tuning(session)


def test_an_unreadable_tuned_model_falls_back_to_the_frozen_one_and_is_removed(db: Any, tmp_path: Path) -> None:
    from marketplace.domain.routing.engine import RoutingEngine

    engine = RoutingEngine(cache=tmp_path)
    with db.session(readonly=True) as session:
        plan = engine.refit_plan(session)
        assert plan is not None
        plan.path.parent.mkdir(parents=True, exist_ok=True)
        plan.path.write_bytes(b"truncated by a full disk")
        model, _ = engine.router(session, tuning=True)
        assert not model.tuned and model.router.decide(load_encoder().encode(["Fix my leaking tap"])[0]).primary
        assert not plan.path.exists()  # so the scheduler asks for a refit
        assert engine.needs_tuning(session)


def test_a_tuned_model_this_process_cannot_build_is_kept_and_not_tried_again(
    db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A readable file whose model this process could not build (out of memory, say) is not the file's fault:
    other processes may load it and a refit takes minutes, so it stays; this process routes with the frozen
    model and does not retry the load on every batch."""
    from marketplace.domain.routing.engine import RoutingEngine

    engine = RoutingEngine(cache=tmp_path)
    attempts: list[Path] = []

    def failing_load(path: Path, *_args: Any, **_kwargs: Any) -> RoutingModel:
        attempts.append(path)
        raise MemoryError("no room for the tuned graph")

    monkeypatch.setattr(RoutingModel, "load", failing_load)
    with db.session(readonly=True) as session:
        plan = engine.refit_plan(session)
        assert plan is not None
        plan.path.parent.mkdir(parents=True, exist_ok=True)
        plan.path.write_bytes(b"a model file")
        for _ in range(2):
            model, _ = engine.router(session, tuning=True)
            assert not model.tuned
        assert plan.path.exists() and attempts == [plan.path]


def test_a_refit_asked_for_while_another_runs_waits_then_fits_the_taxonomy_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staff add an example while the previous version's fit runs: the second refit job waits for the first
    (the scheduler will not ask again for an hour), then reads the taxonomy as it is by then. The fit itself is
    replaced here: what is checked is the engine's ordering, and a real fit takes minutes."""
    import threading

    from marketplace.domain.routing import engine as engine_module

    engine = engine_module.RoutingEngine(cache=tmp_path)
    started, release = threading.Event(), threading.Event()
    fitted: list[str] = []

    class Fitted:
        fit_seconds = 0.0

        @staticmethod
        def save(path: Path) -> None:
            path.write_bytes(b"model")

    def fit(labels: list[str], *_args: Any, **_kwargs: Any) -> Fitted:
        fitted.append(",".join(labels))
        if len(fitted) == 1:
            started.set()
            release.wait(10)
        return Fitted()

    monkeypatch.setattr(engine_module, "fit_routing_model", fit)
    current = {"plan": engine_module.RefitPlan("v1", ["a"], ["x"], ["x"], tmp_path / "v1.npz")}
    outcomes: list[str] = []
    jobs = [threading.Thread(target=lambda: outcomes.append(engine.refit(lambda: current["plan"])))
            for _ in range(2)]
    jobs[0].start()
    assert started.wait(10)
    current["plan"] = engine_module.RefitPlan("v2", ["a", "b"], ["x", "y"], ["x", "y"], tmp_path / "v2.npz")
    jobs[1].start()
    time.sleep(0.2)
    assert fitted == ["a"]  # the second job waits for the first instead of returning
    release.set()
    for job in jobs:
        job.join(10)
    assert outcomes == ["fitted", "fitted"] and fitted == ["a", "a,b"]
    assert [p.name for p in tmp_path.glob("*.npz")] == ["v2.npz"]  # only the current version's model is kept


@pytest.mark.parametrize("moved_on", [False, True])
def test_a_refit_keeps_the_model_of_the_taxonomy_as_it_is_when_the_fit_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moved_on: bool
) -> None:
    """Worker replicas share the model cache, and another process may save a model while this one fits: a newer
    taxonomy's (staff added an example, a customer objected) or, from a slower fit, an older one. Only the model
    of the taxonomy as it is when the fit ends is kept: a newer one is not deleted (the scheduler would not ask
    for it again for an hour), stale ones go, this fit's own included when the taxonomy has moved on."""
    from marketplace.domain.routing import engine as engine_module

    engine = engine_module.RoutingEngine(cache=tmp_path)
    (tmp_path / "v0.npz").write_bytes(b"model")  # an earlier version's
    current = {"path": tmp_path / "v1.npz"}

    class Fitted:
        fit_seconds = 0.0

        @staticmethod
        def save(path: Path) -> None:
            path.write_bytes(b"model")

    def fit(*_args: Any, **_kwargs: Any) -> Fitted:
        # meanwhile another process saves a model: of a version older than this fit's ...
        (tmp_path / "v0b.npz").write_bytes(b"model")
        if moved_on:  # ... and, the taxonomy having changed, of the newer one
            current["path"] = tmp_path / "v2.npz"
            current["path"].write_bytes(b"model")
        return Fitted()

    monkeypatch.setattr(engine_module, "fit_routing_model", fit)
    plan = engine_module.RefitPlan("v1", ["a"], ["x"], ["x"], tmp_path / "v1.npz")
    assert engine.refit(lambda: plan, lambda: current["path"]) == "fitted"
    assert [p.name for p in tmp_path.glob("*.npz")] == ["v2.npz" if moved_on else "v1.npz"]


def test_processes_saving_the_same_tuned_model_at_once_leave_one_whole_file(tmp_path: Path) -> None:
    """Worker replicas share the cache and may fit the same taxonomy version: their saves must not share a
    temporary file (one's rename would take the other's half-written file, or fail)."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from routing.router import Router
    from routing.tuned import RoutingModel

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    router = Router().fit([f"c{i % 4}" for i in range(40)], vectors, [f"t{i}" for i in range(40)])
    model = RoutingModel(None, router, True, "f" * 64, 1.0, {"layer.0.weight": rng.normal(size=(256, 256))})
    path = tmp_path / "v1.npz"
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(model.save, path) for _ in range(24)]:
            future.result()  # none failed
    with np.load(path) as data:
        assert data["override/layer.0.weight"].shape == (256, 256)
    assert [p.name for p in tmp_path.iterdir()] == ["v1.npz"]  # no temporary file left behind


def test_a_tuned_model_ranks_providers_with_its_own_vectors_one_encoder_pass_per_task(
    tuned: RoutingModel, api: Api, settings: Settings, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the tuned model is in use, a task is encoded once, by the tuned encoder: its vector decides the
    category and ranks the providers, whose profiles are embedded in the same space. The model takes over only
    when every open profile has a vector there (a few per call of ``router``, as at 100,000 providers); until
    then the frozen model decides and ranks. An edited profile gets a new vector in both spaces."""
    import uuid

    from sqlalchemy import select

    from marketplace.db.models import Category, CategoryExample, Offer, ProviderProfile
    from marketplace.domain.providers.services import profile_text
    from marketplace.domain.routing import engine as engine_module
    from marketplace.domain.routing.engine import ModelReplaced, RoutingEngine, task_text
    from marketplace.domain.routing.services import route_task
    from marketplace.domain.tasks.schemas import TaskIn
    from marketplace.domain.tasks.services import create_task

    abouts = {"Ann": "Leaking taps, dripping pipes and blocked drains fixed the same day.",
              "Bo": "Boiler servicing, radiators and central heating repairs.",
              "Cy": "Bathroom refits: showers, toilets and basins plumbed in."}
    providers = [api.provider(["plumbing"], f"Plumber {name}", about) for name, about in abouts.items()]
    monkeypatch.setattr(engine_module, "WARM_PROFILES", 2)
    engine = RoutingEngine(cache=tmp_path, tuning=LIGHT)
    with db.session(readonly=True) as session:
        open_profiles = len(engine._open_profiles(session))  # the three, and any the test database seeds
        path = engine.current_tuned_path(session)
        tuned.save(path)
        # Category suggestions (the API process, which ranks nobody) use it at once and embed no profile for it.
        suggesting, _ = engine.router(session, tuning=True, ranking=False)
        assert suggesting.tuned and tuned.encoder.model_id not in engine._spaces
        calls = 0
        while not (model := engine.router(session, tuning=True)[0]).tuned:
            calls += 1
            assert engine.latest_model() is model and engine.ranking_encoder() is engine.encoder
            assert len(engine._spaces[tuned.encoder.model_id]) == 2 * calls
        assert calls == math.ceil(open_profiles / 2) - 1 >= 1
    tuned_space = model.encoder
    assert engine.ranking_encoder() is tuned_space and tuned_space.model_id == tuned.encoder.model_id

    seen: dict[str, list[str]] = {engine.encoder.model_id: [], tuned_space.model_id: []}
    for encoder in (engine.encoder, tuned_space):
        real, texts_of = encoder.encode, seen[encoder.model_id]
        monkeypatch.setattr(encoder, "encode",
                            lambda texts, real=real, texts_of=texts_of: (texts_of.extend(texts), real(texts))[1])
    customer, _ = api.user("customer")
    title, description = "Dripping tap", "The kitchen tap drips all night and the pipe under the sink is wet."
    with db.session() as session:
        task_id = create_task(session, uuid.UUID(customer["id"]), TaskIn(title=title, description=description)).id
    with db.session() as session:
        assert route_task(session, settings, engine, task_id) == "routed"
    text = task_text(title, description)
    # one pass, by the tuned encoder; its profile vectors were all there (the shared encoder embedded the
    # profiles for its own space, which the provider snapshot keeps up to date too)
    assert seen[tuned_space.model_id] == [text] and text not in seen[engine.encoder.model_id]

    task_vector = tuned_space.encode([text])[0]
    ours = {p["id"] for p, _ in providers}
    with db.session(readonly=True) as session:
        offers = session.scalars(select(Offer).where(Offer.task_id == task_id)).all()
    assert {str(o.provider_id) for o in offers} & ours
    for offer in offers:
        profile = engine._spaces[tuned_space.model_id][offer.provider_id][1]
        assert offer.components["semantic"] == pytest.approx(max(float(profile @ task_vector), 0.0), abs=2e-4)
        shared = engine._spaces[engine.encoder.model_id][offer.provider_id][1]
        assert not np.allclose(profile, shared, atol=1e-3)  # a different space

    # An edited profile: a new vector in the tuned space and in the shared one (for the next frozen model).
    def put_profile(headers: dict[str, str], headline: str, description: str, accepting_work: bool = True) -> None:
        r = api.client.put("/api/v1/providers/me", headers=headers, json={
            "headline": headline, "description": description, "skills": ["Plumber"], "categories": ["plumbing"],
            "languages": ["en"], "capacity": 3, "accepting_work": accepting_work, "hourly_rate": "40",
            "rate_currency": "USD"})
        assert r.status_code == 200, r.text

    (ann, ann_h), (bo, bo_h) = providers[:2]
    put_profile(ann_h, "Plumber Ann", "Emergency leak repairs at night.")
    with db.session(readonly=True) as session:
        index = engine.provider_index(session, tuned_space)
        row = index.row_of[ann["id"]]
        edited = profile_text(session.get(ProviderProfile, uuid.UUID(ann["id"])))
    assert "Emergency leak repairs" in edited
    for space in (tuned_space, engine.encoder):
        stored = engine._spaces[space.model_id][uuid.UUID(ann["id"])][1]
        assert float(stored @ space.encode([edited])[0]) > 0.99
    assert np.allclose(index.vector(row), engine._spaces[tuned_space.model_id][uuid.UUID(ann["id"])][1])

    # A provider who stops taking work leaves no vector in any space.
    put_profile(bo_h, "Plumber Bo", abouts["Bo"], accepting_work=False)
    with db.session(readonly=True) as session:
        assert bo["id"] not in engine.provider_index(session, tuned_space).row_of
    assert not any(uuid.UUID(bo["id"]) in space for space in engine._spaces.values())

    # A new taxonomy version has no tuned model yet: the frozen one decides and ranks, and the old tuned
    # model's vectors go. A batch still holding that model is told to route again, not left to embed every
    # profile in its space afresh.
    with db.session() as session:
        plumbing = session.scalar(select(Category).where(Category.slug == "plumbing"))
        session.add(CategoryExample(category_id=plumbing.id, text="Swap the washer in a dripping tap",
                                    source="staff"))
    with db.session(readonly=True) as session:
        model, _ = engine.router(session, tuning=True)
        assert not model.tuned and engine.ranking_encoder() is engine.encoder
        assert set(engine._spaces) == {engine.encoder.model_id}
        with pytest.raises(ModelReplaced):  # (the snapshot read just before would still do, for 5 s)
            engine.provider_index(session, tuned_space, fresh=True)
        assert ann["id"] in engine.provider_index(session, model.encoder).row_of


def test_a_worker_puts_a_new_tuned_model_in_use_while_no_task_comes(
    tuned: RoutingModel, api: Api, settings: Settings, db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a quiet marketplace a tuned model saved by the refit job takes over in a routing worker with no
    routing batch: the worker's upkeep thread embeds the profiles in its space (a few at a time) and puts it
    in use, so the next task is decided and ranked by it without waiting for that."""
    from marketplace.domain.routing import engine as engine_module
    from marketplace.domain.routing.engine import RoutingEngine
    from workers import runtime
    from workers.upkeep import start_upkeep

    for name in ("Ann", "Bo", "Cy"):
        api.provider(["plumbing"], f"Plumber {name}", "Leaking taps, dripping pipes and blocked drains fixed.")
    monkeypatch.setattr(engine_module, "WARM_PROFILES", 2)
    engine = RoutingEngine(cache=tmp_path, tuning=LIGHT)
    monkeypatch.setattr(engine_module, "_engine", engine)  # the worker process's engine
    monkeypatch.setattr(runtime, "_settings", settings.with_(router_tuning=True, routing_upkeep_s=0.05))
    with db.session(readonly=True) as session:
        assert not engine.router(session, tuning=True)[0].tuned  # what the worker routed with so far
        open_ids = {r.account_id for r in engine._open_profiles(session)}
        tuned.save(engine.current_tuned_path(session))  # the refit job's, in another process
    assert len(open_ids) > 2  # more than one round's worth

    upkeep = start_upkeep()
    assert upkeep is not None
    try:
        assert wait_until(lambda: (m := engine.latest_model()) is not None and m.tuned, seconds=60)
    finally:
        upkeep.stop()
    assert not upkeep.is_alive()
    space = engine.latest_model().encoder.model_id  # type: ignore[union-attr]
    assert space == tuned.encoder.model_id and engine._spaces[space].keys() >= open_ids


def test_no_upkeep_thread_when_it_is_switched_off(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers import runtime
    from workers.upkeep import start_upkeep

    monkeypatch.setattr(runtime, "_settings", settings)  # routing_upkeep_s=0
    assert start_upkeep() is None
    with pytest.raises(ValueError, match="RELAY_ROUTING_UPKEEP_S"):
        settings.with_(routing_upkeep_s=-1.0)
