"""``python -m routing.evaluate PATH [--shots K] [--json]`` with the real local model, on a small set built
from the demo taxonomy: the output contract of issue #3 (the last line one JSON object with the metrics) and
what the numbers mean, and a malformed set failing with a message and a non-zero status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from routing.evaluate import main

pytestmark = pytest.mark.model

ROOT = Path(__file__).parents[2]
TAXONOMY = json.loads((ROOT / "marketplace/demo/taxonomy.json").read_text())
CASES = [
    {"text": "My kitchen tap drips all night and the pipe under the sink is wet", "route": "plumbing"},
    {"text": "Turn our German product manual into English and French", "route": "translation"},
    {"text": "Cut our 40 minutes of conference footage into a 3 minute highlight reel",
     "route": "video-editing"},
    {"text": "We need our quarterly VAT return and self-assessment filed", "route": "tax-preparation"},
    {"text": "How many calories are in a banana?", "route": None},
    {"text": "Set an alarm for 6 am", "route": None},
]
KEYS = {"in_scope_accuracy", "oos_recall", "oos_precision", "macro_f1", "p50_ms", "p99_ms"}


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "demo.json"
    routes = {c["slug"]: c["examples"] for c in TAXONOMY["categories"]}
    path.write_text(json.dumps({"name": "demo", "routes": routes, "cases": CASES}), encoding="utf-8")
    return path


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_the_module_prints_the_metrics_and_ends_with_one_json_line(demo_set: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "routing.evaluate", str(demo_set), "--json", "--frozen"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "in-scope accuracy" in done.stdout and "out-of-scope recall" in done.stdout
    result = last_json(done.stdout)
    assert result.keys() >= KEYS
    assert result["routes"] == 25 and result["examples"] == 350 and result["cases"] == len(CASES)
    shares = ("in_scope_accuracy", "oos_recall", "oos_precision", "macro_f1")
    assert all(0.0 <= result[k] <= 1.0 for k in shares)
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    # Clear requests reach their category and the two unrelated ones abstain: every metric is at its best.
    assert (result["in_scope_accuracy"], result["oos_recall"], result["oos_precision"]) == (1.0, 1.0, 1.0)
    assert result["tuned"] is False


def test_shots_limit_the_examples_the_router_learns_from(
    demo_set: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(demo_set), "--shots", "2", "--json", "--frozen"]) == 0
    result = last_json(capsys.readouterr().out)
    assert result["examples"] == 2 * 25 and result["routes"] == 25


def test_a_malformed_set_fails_with_a_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    bad = {"routes": {"plumbing": ["fix a tap"]}, "cases": [{"text": "x", "route": "legal"}]}
    path.write_text(json.dumps(bad), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "routing.evaluate", str(path), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert done.returncode != 0
    assert "cases name routes that have no examples: ['legal']" in done.stderr
    assert "Traceback" not in done.stderr
