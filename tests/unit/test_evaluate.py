"""routing.evaluate's pure parts: the metrics it prints, reading a routing set (a malformed one stops the run
with a message naming the problem, not a traceback), and ``--shots`` sampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routing.evaluate import RoutingSet, metrics


def test_metrics_count_abstaining_as_wrong_in_scope_and_right_out_of_scope() -> None:
    truth = ["pay", "pay", "book", None, None]
    predicted = ["pay", None, "pay", None, "book"]
    m = metrics(truth, predicted)
    assert m["in_scope_accuracy"] == pytest.approx(1 / 3)  # one of three in-scope cases routed right
    assert m["oos_recall"] == pytest.approx(1 / 2)  # one of two out-of-scope cases abstained
    assert m["oos_precision"] == pytest.approx(1 / 2)  # of two abstentions, one was out of scope
    # pay: 1 right, 1 missed, 1 wrongly given -> F1 0.5; book: 0 right -> 0
    assert m["macro_f1"] == pytest.approx(0.25)


def test_macro_f1_counts_a_route_the_router_chose_that_no_case_is_about() -> None:
    # "refund" has examples but no cases; sending a case there is a wrong answer its F1 of 0 must show
    m = metrics(["pay", "pay", "book", "book"], ["pay", "refund", "book", "book"])
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_metrics_of_a_perfect_router() -> None:
    truth = ["pay", "book", None]
    assert metrics(truth, list(truth)) == {"in_scope_accuracy": 1.0, "oos_recall": 1.0, "oos_precision": 1.0,
                                           "macro_f1": 1.0}


def test_a_metric_with_nothing_to_measure_is_none_not_zero() -> None:
    # no out-of-scope case: no out-of-scope recall; the router never abstained: no out-of-scope precision
    m = metrics(["pay", "book"], ["pay", "pay"])
    assert m == {"in_scope_accuracy": 0.5, "oos_recall": None, "oos_precision": None,
                 "macro_f1": pytest.approx((2 / 3 + 0) / 2)}
    # only out-of-scope cases: no in-scope accuracy and no per-route F1
    m = metrics([None, None], [None, "pay"])
    assert m == {"in_scope_accuracy": None, "oos_recall": 0.5, "oos_precision": 1.0, "macro_f1": None}


GOOD = {
    "name": "tiny",
    "routes": {"pay": ["pay my bill", "settle the invoice", "  "], "book": ["book a flight"]},
    "cases": [{"text": "pay the bill", "route": "pay"}, {"text": "weather?", "route": None}],
}


def test_a_well_formed_set_is_read(tmp_path: Path) -> None:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8")
    rs = RoutingSet.load(path)
    assert rs.name == "tiny"
    # the blank example is dropped, and counted (the command says so)
    assert rs.routes == {"pay": ["pay my bill", "settle the invoice"], "book": ["book a flight"]}
    assert rs.blank_examples == 1 and rs.with_shots(1).blank_examples == 1
    assert rs.cases == [("pay the bill", "pay"), ("weather?", None)]


@pytest.mark.parametrize(("data", "message"), [
    ([1, 2], "expected a JSON object"),
    ({"cases": GOOD["cases"]}, "'routes' must be an object"),
    ({"routes": {}, "cases": GOOD["cases"]}, "'routes' must be an object"),
    ({"routes": {"pay": "pay my bill"}, "cases": GOOD["cases"]}, "route 'pay': examples must be a list"),
    ({"routes": {"pay": ["pay my bill"], "book": []}, "cases": GOOD["cases"]},
     "routes without examples: ['book']"),
    ({"routes": GOOD["routes"]}, "'cases' must be a non-empty list"),
    ({"routes": GOOD["routes"], "cases": []}, "'cases' must be a non-empty list"),
    ({"routes": GOOD["routes"], "cases": [{"text": "hi"}]}, "case 0: expected"),
    ({"routes": GOOD["routes"], "cases": [{"text": 3, "route": None}]}, "case 0: expected"),
    ({"routes": GOOD["routes"], "cases": [{"text": "x", "route": "refund"}]},
     "cases name routes that have no examples: ['refund']"),
])
def test_a_malformed_set_stops_with_a_message_naming_the_problem(
    tmp_path: Path, data: object, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        RoutingSet.load(path)
    assert message in str(stop.value.code)


def test_an_unreadable_file_stops_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    for path in (tmp_path / "broken.json", tmp_path / "missing.json"):
        with pytest.raises(SystemExit) as stop:
            RoutingSet.load(path)
        assert f"cannot read routing set {path}" in str(stop.value.code)


def test_shots_keep_at_most_k_examples_per_route_the_same_for_a_seed() -> None:
    rs = RoutingSet("s", {"a": [f"a{i}" for i in range(10)], "b": ["b0", "b1"]}, [("a0", "a")])
    three = rs.with_shots(3, seed=0)
    assert {r: len(ex) for r, ex in three.routes.items()} == {"a": 3, "b": 2}
    assert set(three.routes["a"]) <= set(rs.routes["a"])
    assert three.routes == rs.with_shots(3, seed=0).routes
    assert any(rs.with_shots(3, seed=s).routes["a"] != three.routes["a"] for s in range(1, 6))
    assert rs.with_shots(None) is rs and three.cases == rs.cases
