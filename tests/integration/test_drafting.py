"""The generative drafting engine from a clean checkout: the GGUF file inside the installed package is
converted once into the model cache, every later load reads the cache, and each draft records the weights
hash and the grounding guard's verdict. (Guard rules: tests/unit/test_grounding.py; the engines with a
stand-in model: tests/unit/test_drafter.py; no network: tests/integration/test_no_data_leaves.py.)"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from models import generative
from models.drafter import Drafter, DraftInput, ProviderInput

pytestmark = pytest.mark.model

TASK = DraftInput("Leaking kitchen tap", "The kitchen mixer tap drips all night; please replace the cartridge.",
                  "Plumbing", ("Ask for photos of the tap", "Visit and diagnose", "Replace the cartridge"),
                  ("Is it a mixer tap or two separate taps?",))
PROVIDER = ProviderInput("Owen Caldwell", "Licensed plumber, repairs and installs", ("Leak repair",),
                         Decimal("70.00"), "I have been a licensed plumber for 15 years.")


def test_the_packaged_gguf_is_converted_once_and_then_loaded_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_MODEL_CACHE", str(tmp_path))
    first = generative.GenerativeModel()
    digest = hashlib.sha256(generative.packaged_gguf().read_bytes()).hexdigest()
    assert first.weights_hash == digest and first.path == tmp_path / "smollm2" / digest[:16]
    assert (first.path / "model.safetensors").is_file() and not list(first.path.parent.glob(".smollm2-*"))

    def no_conversion(*_args: object) -> None:
        raise AssertionError("converted again although the cache holds the model")

    convert = generative.GenerativeModel._convert
    monkeypatch.setattr(generative.GenerativeModel, "_convert", staticmethod(no_conversion))
    second = generative.GenerativeModel()
    same = "You rewrite a freelancer's reply so it reads naturally. Keep every fact. Add nothing."
    assert first.generate(same, "Rewrite:\nThank you for posting.", 12).text == \
        second.generate(same, "Rewrite:\nThank you for posting.", 12).text  # greedy: reproducible

    (second.path / "model.safetensors").unlink()  # a damaged cache is rebuilt
    monkeypatch.setattr(generative.GenerativeModel, "_convert", staticmethod(convert))
    assert (generative.GenerativeModel().path / "model.safetensors").is_file()


def test_a_generative_draft_records_the_model_and_keeps_the_composers_plan_and_questions() -> None:
    result = Drafter("generative").draft(TASK, PROVIDER)
    assert result.weights_hash == generative.load_generative().weights_hash
    assert result.guard is not None and result.tokens > 0
    assert result.engine == ("generative" if result.guard["accepted"] else "composer")
    for line in ("1. Ask for photos of the tap", "- Is it a mixer tap or two separate taps?",
                 "My rate is 70.00 per hour.", "Best regards,\nOwen Caldwell"):
        assert line in result.text
