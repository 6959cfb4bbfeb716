"""Router: routes to the nearest category, abstains when nothing fits, reports close second categories."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing.router import HoldoutScores, Router, best_first

DIM = 16
AXES = np.eye(DIM, dtype=np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def examples(centers: dict[str, np.ndarray], noise: float = 0.1, n: int = 8, seed: int = 0):
    rs = np.random.RandomState(seed)
    labels, vectors, texts = [], [], []
    for slug, center in centers.items():
        for i in range(n):
            labels.append(slug)
            vectors.append(unit(center + noise * rs.randn(DIM)))
            texts.append(f"{slug} example {i}")
    return labels, np.stack(vectors), texts


SEPARATED = examples({"design": AXES[0], "legal": AXES[1], "moving": AXES[2]})
# "logo" and "branding" are close (cosine ~0.86); "tax" is far from both.
CLOSE = examples({"logo": AXES[3], "branding": unit(AXES[3] + 0.6 * AXES[4]), "tax": AXES[7]})


@pytest.fixture(scope="module")
def router() -> Router:
    return Router().fit(*SEPARATED)


def test_vector_near_a_cluster_routes_to_it(router: Router) -> None:
    for slug, axis in (("design", 0), ("legal", 1), ("moving", 2)):
        d = router.decide(unit(AXES[axis] + 0.1 * AXES[9]))
        assert not d.abstain
        assert d.primary == slug
        assert d.categories == [d.ranking[0]]


def test_vector_far_from_every_cluster_abstains(router: Router) -> None:
    d = router.decide(AXES[9])  # orthogonal to all three centres
    assert d.abstain and d.primary is None and d.categories == []
    assert len(d.ranking) == 3  # the ranking is still reported for review


def test_thresholds_are_fitted_from_the_examples_alone(router: Router) -> None:
    labels, vectors, _ = SEPARATED
    # every training example is accepted under its own label ...
    assert all(router.decide(v).primary == slug for slug, v in zip(labels, vectors, strict=True))
    # ... and a request unlike every example is rejected for being unfamiliar, however sure the head is
    far = router.decide(AXES[9])
    assert far.similarity < router.similarity_threshold <= min(router.decide(v).similarity for v in vectors)
    assert 0 <= router.threshold < 1


def test_probabilities_sum_to_one(router: Router) -> None:
    probs = router.scores(unit(AXES[0] + AXES[1]))
    assert probs.shape == (3,) and abs(float(probs.sum()) - 1) < 1e-5


def test_midway_between_close_clusters_yields_both_labels_primary_first() -> None:
    labels, vectors, texts = CLOSE
    logo, branding = AXES[3], unit(AXES[3] + 0.6 * AXES[4])
    midway = unit(0.5 * logo + 0.5 * branding)  # halfway between the pair
    router = Router().fit(labels, vectors, texts)
    d = router.decide(midway)
    assert [slug for slug, _ in d.categories] == ["logo", "branding"]
    assert d.categories[0][1] >= d.categories[1][1] >= router.min_secondary

    single = Router(secondary_ratio=0.0).fit(labels, vectors, texts).decide(midway)
    assert [slug for slug, _ in single.categories] == ["logo"]
    # far from the pair, only the clear winner is reported
    assert [s for s, _ in router.decide(unit(AXES[7] + 0.05 * AXES[9])).categories] == ["tax"]


def test_decision_exposes_ranking_threshold_and_nearest_examples(router: Router) -> None:
    d = router.decide(unit(AXES[1] + 0.1 * AXES[9]), n_ranking=2, n_nearest=3)
    assert d.ranking[0][0] == "legal" and len(d.ranking) == 2
    assert d.ranking[0][1] >= d.ranking[1][1]
    assert d.threshold == round(router.threshold, 4)
    assert len(d.nearest_examples) == 3
    sims = [sim for _, _, sim in d.nearest_examples]
    assert sims == sorted(sims, reverse=True)
    _, _, texts = SEPARATED
    for slug, text, _ in d.nearest_examples:
        assert slug == "legal" and text in texts and text.startswith("legal ")


def test_fit_rejects_mismatched_or_empty_input() -> None:
    labels, vectors, _ = SEPARATED
    with pytest.raises(ValueError):
        Router().fit(labels[:-1], vectors)
    with pytest.raises(ValueError):
        Router().fit([], np.zeros((0, DIM), dtype=np.float32))
    with pytest.raises(ValueError):
        Router().fit(labels, vectors, ["too", "few", "texts"])


def test_decide_before_fit_raises() -> None:
    with pytest.raises(RuntimeError):
        Router().decide(AXES[0])


def test_a_given_cosine_head_and_thresholds_replace_fitting() -> None:
    labels, vectors, texts = SEPARATED
    # A head that (wrongly) points "design" at the legal axis: the router must follow the head it was given.
    head = np.stack([AXES[1], AXES[0], AXES[2]])  # rows in sorted category order: design, legal, moving
    router = Router().fit(labels, vectors, texts, thresholds=(0.3, 0.1), head=head)
    assert (router.threshold, router.similarity_threshold) == (0.3, 0.1)
    assert router.decide(AXES[1]).primary == "design"
    assert router.decide(AXES[0]).primary == "legal"
    with pytest.raises(ValueError):
        Router().fit(labels, vectors, texts, head=head[:2])


def test_a_decision_says_it_was_unfamiliar_even_where_the_reported_numbers_round_to_the_threshold() -> None:
    """The explanation tells a customer why a task went to staff (unlike any category, or no category sure
    enough): that must follow the unrounded comparison that decided, not the 4-decimal numbers it reports."""
    labels, vectors, texts = SEPARATED
    head = np.stack([unit(vectors[[lab == c for lab in labels]].mean(axis=0)) for c in ("design", "legal", "moving")])
    probe = unit(AXES[1] + 0.5 * AXES[9])

    def decide(similarity_threshold: float):  # confidence threshold 0: only familiarity can reject
        return Router().fit(labels, vectors, texts, thresholds=(0.0, similarity_threshold), head=head).decide(probe)

    reported = decide(-1.0).similarity
    tied = set()
    for t in np.arange(reported - 1e-4, reported + 1e-4, 2e-6):
        d = decide(float(t))
        assert d.unfamiliar == d.abstain
        if d.similarity == d.similarity_threshold:
            tied.add(d.unfamiliar)
    assert tied == {True, False}  # equal reported numbers, either way round underneath


def test_the_abstain_summary_gives_the_reason_that_decided() -> None:
    from marketplace.domain.routing.services import _abstain_summary
    from routing.router import Decision

    def summary(unfamiliar: bool) -> str:
        return _abstain_summary("Plumbing", 0.97, Decision(True, [], [("plumbing", 0.97)], 0.5, 0.5, 0.5,
                                                           unfamiliar=unfamiliar))

    assert "unlike the requests we have categories for" in summary(True)
    assert "Plumbing, is only a 97% match" in summary(False)


def test_held_out_categories_never_leak_into_the_calibration_training_part() -> None:
    labels, vectors, _ = examples({f"c{i}": AXES[i] for i in range(10)})
    router = Router()
    y = np.array([int(s[1:]) for s in labels])
    split = router.holdout(y, 10, np.random.default_rng(0))
    held = set(y[split.out_of_scope])
    assert held and not held & set(y[split.train]) and not held & set(y[split.in_scope])
    assert not (split.train & split.in_scope).any()
    assert split.n_kept == 10 - len(held) and (split.remap[list(held)] == -1).all()
    scores = router.holdout_scores(vectors, y, split)
    # held-out categories look unfamiliar; held-out examples of kept categories are routed right
    assert scores.in_ok.all() and scores.oos_sim.max() < scores.in_sim.min()


@pytest.mark.parametrize("seed", range(40))
def test_every_kept_category_keeps_an_example_to_learn_from(seed: int) -> None:
    # a taxonomy with one to three examples per category (routing.evaluate --shots 1 .. 3)
    y = np.repeat(np.arange(12), [1, 1, 2, 2, 2, 3, 3, 1, 2, 2, 1, 3])
    split = Router().holdout(y, 12, np.random.default_rng(seed))
    kept = np.setdiff1d(np.arange(12), y[split.out_of_scope])
    assert set(y[split.train]) == set(kept.tolist())  # none is left without a training example
    assert not set(y[split.in_scope]) & {0, 1, 7, 10}  # a single example is never held out as evidence
    assert not (split.train & split.in_scope).any()
    assert (split.train | split.in_scope | split.out_of_scope).all()


def test_without_in_scope_evidence_the_threshold_rejects_the_target_share_of_held_out_categories() -> None:
    empty = np.zeros(0, dtype=np.float32)
    oos_conf = np.linspace(0.1, 1.0, 10, dtype=np.float32)
    scores = HoldoutScores(empty, empty, np.zeros(0, dtype=bool), oos_conf, np.ones(10, dtype=np.float32))
    t_conf, t_sim = Router(oos_target=0.5).choose_thresholds(scores)
    assert t_sim == -1.0
    assert (oos_conf < t_conf).mean() == 0.5  # the target share, and no more: the loosest such threshold
    assert (oos_conf < np.nextafter(np.float32(t_conf), np.float32(0))).mean() < 0.5


def test_with_one_example_per_category_clear_requests_route_and_unlike_ones_can_abstain() -> None:
    # No held-out in-scope example can be of a category the holdout fit learned: the threshold comes from the
    # held-out categories alone. (Before, it was fitted to abstain on everything.)
    labels, vectors, texts = examples({f"c{i}": AXES[i] for i in range(10)}, n=1)
    unlike = np.zeros((200, DIM), dtype=np.float32)
    unlike[:, 10:] = np.random.RandomState(1).randn(200, DIM - 10)  # in no category's direction
    unlike = unit(unlike)
    rates = {}
    for target in (0.0, 0.5):
        router = Router(oos_target=target).fit(labels, vectors, texts)
        for i in range(10):
            d = router.decide(unit(AXES[i] + 0.2 * AXES[12]))
            assert not d.abstain and d.primary == f"c{i}"
        rates[target] = np.mean([d.abstain for d in router.decide_many(unlike)])
    assert rates[0.0] == 0.0 and rates[0.5] >= 0.2


def test_deciding_a_batch_gives_each_row_its_own_decision() -> None:
    """A routing batch decides its tasks together; each decision is the one the task would get alone
    (abstentions, secondary categories and nearest examples included)."""
    router = Router().fit(*CLOSE)
    rs = np.random.RandomState(3)
    rows = unit(np.stack([AXES[3], unit(AXES[3] + 0.6 * AXES[4]), unit(AXES[3] + 0.3 * AXES[4]), AXES[7],
                          AXES[9], *rs.randn(11, DIM)]))
    batch = router.decide_many(rows)
    alone = [router.decide(v) for v in rows]
    assert len(batch) == len(alone) == 16
    for b, a in zip(batch, alone, strict=True):
        assert (b.abstain, [s for s, _ in b.categories], [s for s, _ in b.ranking]) == \
               (a.abstain, [s for s, _ in a.categories], [s for s, _ in a.ranking])
        assert [t for _, t, _ in b.nearest_examples] == [t for _, t, _ in a.nearest_examples]
        assert b.similarity == pytest.approx(a.similarity, abs=1e-4)
        assert [p for _, p in b.ranking] == pytest.approx([p for _, p in a.ranking], abs=1e-4)
    assert {d.abstain for d in batch} == {True, False}
    assert any(len(d.categories) > 1 for d in batch)
    assert router.decide_many(np.zeros((0, DIM), dtype=np.float32)) == []


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 6), st.integers(1, 40), st.integers(0, 8), st.integers(0, 2**32 - 1))
def test_best_first_is_a_stable_sort_cut_short(rows: int, columns: int, k: int, seed: int) -> None:
    # few distinct values, so ties (kept in column order) are common
    scores = np.random.default_rng(seed).integers(0, 4, size=(rows, columns)).astype(np.float32) / 4
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    assert np.array_equal(best_first(scores, k), expected)


def test_small_tuned_taxonomies_get_several_calibration_runs_and_large_ones_one() -> None:
    from models.tuning import TuningConfig, tuning_steps
    from routing.tuned import CALIBRATION_STEPS, calibration_rounds

    config = TuningConfig()  # 4 epochs, at least 240 steps, batches of 32
    # a run learns from ~64 % of the examples: CLINC150's 15,000 -> 300 batches x 4 epochs = 1,200 steps
    assert calibration_rounds(15_000, config, 3) == 1
    assert calibration_rounds(7_500, config, 3) == 2  # 600 steps a run
    assert calibration_rounds(3_000, config, 3) == 3  # 240 steps (the minimum) a run
    assert calibration_rounds(350, config, 3) == 3 and calibration_rounds(350, config, 2) == 2
    assert calibration_rounds(1_000_000, config, 3) == 1  # never fewer than one
    # within the budget: rounds x steps per run
    assert tuning_steps(9_600, config) == 1_200 and tuning_steps(224, config) == 245  # 7 batches x 35 epochs
    for n in (350, 3_000, 7_500, 9_000, 15_000):
        per_run = tuning_steps(int(0.64 * n), config)
        assert calibration_rounds(n, config, 3) * per_run <= max(CALIBRATION_STEPS, per_run)


@pytest.mark.parametrize("n_categories", [1, 2])
def test_a_taxonomy_too_small_to_hold_categories_out_still_abstains_on_unlike_requests(n_categories: int) -> None:
    # One or two categories: no category can be held out to calibrate on, and with one the head is always
    # sure. The familiarity floor comes from the examples themselves, each left out in turn.
    labels, vectors, texts = examples({f"c{i}": AXES[i] for i in range(n_categories)}, noise=0.3, n=12)
    router = Router().fit(labels, vectors, texts)
    assert router.similarity_threshold > 0.0
    for i in range(n_categories):  # a request like the examples is routed
        d = router.decide(unit(AXES[i] + 0.2 * AXES[12]))
        assert not d.abstain and d.primary == f"c{i}"
    for unlike in (AXES[9], -AXES[0], unit(AXES[10] + AXES[11])):  # unlike every example: abstains
        assert router.decide(unlike).abstain
    # all but about FLOOR_QUANTILE of the examples themselves are accepted
    assert np.mean([router.decide(v).abstain for v in vectors]) <= 0.1


def test_a_single_example_sets_no_familiarity_floor() -> None:
    router = Router().fit(["only"], unit(AXES[0])[None, :], ["the only example"])
    assert router.similarity_threshold == -1.0
    assert not router.decide(unit(AXES[0] + 0.1 * AXES[1])).abstain
