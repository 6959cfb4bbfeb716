"""Drafter: the reply is built only from the task and the provider's profile, and invents no numbers."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from models.drafter import Drafter, DraftInput, ProviderInput

PLAYBOOK = ("Agree on the style", "Sketch three directions", "Deliver vector files")
QUESTIONS = ("Do you have brand colours?", "Where will the logo be used?")
STEP_NUMBER = re.compile(r"(?m)^(\d+)\. ")


def task(**overrides) -> DraftInput:
    fields = {"title": "Logo for a bakery",
              "description": "We open in spring. The logo goes on bags and the shop front.",
              "category_name": "Logo Design", "playbook": PLAYBOOK, "questions": QUESTIONS}
    return DraftInput(**{**fields, **overrides})


PROVIDER = ProviderInput("Ana Silva", headline="Brand designer for small shops.",
                         skills=("Illustrator", "Branding"))


def test_draft_names_the_task_and_provider_and_uses_the_playbook_and_questions() -> None:
    text = Drafter().compose(task(), PROVIDER).text
    assert "Logo for a bakery" in text
    assert "Ana Silva" in text and text.rstrip().endswith("Ana Silva")
    assert "We open in spring." in text and "shop front" not in text  # first sentence only
    for i, step in enumerate(PLAYBOOK, 1):
        assert f"{i}. {step}" in text
    for q in QUESTIONS:
        assert f"- {q}" in text


def test_budget_and_deadline_questions_only_when_missing() -> None:
    missing = Drafter().compose(task(), PROVIDER).text
    assert "What budget" in missing and "When do you need" in missing

    known = Drafter().compose(task(budget_amount=Decimal("1500.00"), budget_currency="EUR",
                                   deadline=datetime(2026, 12, 1, tzinfo=UTC)), PROVIDER).text
    assert "What budget" not in known and "When do you need" not in known
    assert "1500.00 EUR" in known and "01 December 2026" in known


def test_draft_introduces_no_number_absent_from_the_inputs() -> None:
    t = task(description="Need 3 logo variants for 2 shops. Extra detail.", budget_amount=Decimal("2500.50"),
             budget_currency="USD", deadline=datetime(2027, 3, 9, 17, 30, tzinfo=UTC))
    p = ProviderInput("Studio 54", headline="Designer since 2011", skills=("Figma",),
                      hourly_rate=Decimal("45.00"))
    draft = Drafter().compose(t, p).text
    inputs = " ".join([t.title, t.description, *t.playbook, *t.questions, str(t.budget_amount),
                       t.deadline.isoformat(), p.display_name, p.headline, *p.skills, str(p.hourly_rate)])
    allowed = set(re.findall(r"\d+", inputs))
    body = STEP_NUMBER.sub("", draft)
    assert STEP_NUMBER.findall(draft) == [str(i) for i in range(1, len(PLAYBOOK) + 1)]
    assert set(re.findall(r"\d+", body)) <= allowed
    for number in ("Need 3 logo variants for 2 shops.", "2500.50 USD", "09 March 2027", "45.00 per hour"):
        assert number in draft


NO_DIGITS = st.text(st.characters(exclude_categories=("Nd", "Cs")), min_size=1, max_size=60)


@given(title=NO_DIGITS, description=NO_DIGITS, name=NO_DIGITS, headline=st.one_of(st.just(""), NO_DIGITS),
       category=st.one_of(st.none(), NO_DIGITS), playbook=st.lists(NO_DIGITS, max_size=12),
       questions=st.lists(NO_DIGITS, max_size=3), skills=st.lists(NO_DIGITS, max_size=8))
def test_without_numbers_in_the_inputs_only_plan_steps_are_numbered(
        title, description, name, headline, category, playbook, questions, skills) -> None:
    draft = Drafter().compose(
        DraftInput(title, description, category_name=category, playbook=tuple(playbook),
                   questions=tuple(questions)),
        ProviderInput(name, headline=headline, skills=tuple(skills)),
    ).text
    assert STEP_NUMBER.findall(draft) == [str(i) for i in range(1, len(playbook) + 1)]
    assert not re.search(r"\d", STEP_NUMBER.sub("", draft))


# -- the generative engine, with a stand-in model (the real one: tests/integration/test_drafting.py) --------
class _Model:
    """Stands in for models.generative.GenerativeModel: returns a fixed text, records the prompt."""

    model_id, weights_hash = "stand-in-model", "ab" * 32

    def __init__(self, text: str) -> None:
        self.text, self.prompts = text, []

    def generate(self, system: str, user: str, max_new_tokens: int | None = None) -> object:
        from models.generative import Generation

        self.prompts.append((system, user))
        return Generation(self.text, tokens=len(self.text.split()), seconds=0.01)


GROUNDED = ("Hello, and thank you for posting your bakery logo. I'm Ana Silva, a brand designer for small shops. "
            "I understand you open in spring.")


def test_the_generative_engine_rewrites_the_opening_and_keeps_the_rest_word_for_word() -> None:
    model = _Model(GROUNDED)
    result = Drafter("generative", generative=model).draft(task(), PROVIDER)
    composed = Drafter().compose(task(), PROVIDER)
    assert result.engine == "generative" and result.model_id == "stand-in-model"
    assert result.weights_hash == "ab" * 32 and result.guard["accepted"] and result.guard["kept"] == 3
    assert result.text.startswith(GROUNDED)
    for step in PLAYBOOK:
        assert step in result.text
    assert composed.text.split("How I would approach it")[1] in result.text, "plan onwards unchanged"
    assert "We open in spring." in model.prompts[0][1], "the model sees only the composed opening"
    assert "Add nothing" in model.prompts[0][0]
    assert "opening" in result.sources and result.sources["plan"] == "the Logo Design playbook"


def test_invented_sentences_are_dropped_and_too_many_keep_the_composers_text() -> None:
    some = Drafter("generative", generative=_Model(
        GROUNDED + " I can deliver by Friday for 300 euros.")).draft(task(), PROVIDER)
    assert some.engine == "generative" and "Friday" not in some.text and "300" not in some.text
    assert some.guard["dropped"][0]["reason"].startswith("number '300'")

    invented = _Model("Hi! I'm Bob from Leeds. I can start Monday. It costs 200. I guarantee it.")
    result = Drafter("generative", generative=invented).draft(task(), PROVIDER)
    assert result.engine == "composer" and result.text == Drafter().compose(task(), PROVIDER).text
    assert result.guard["accepted"] is False and len(result.guard["dropped"]) == 4
    assert "rejected" in result.model_id and result.weights_hash == "ab" * 32


def test_auto_falls_back_to_the_composer_when_the_model_is_not_installed(monkeypatch) -> None:
    from models import generative

    def missing() -> None:
        raise generative.ModelUnavailable("not installed")

    monkeypatch.setattr(generative, "load_generative", missing)
    assert Drafter("auto").draft(task(), PROVIDER).engine == "composer"
    import pytest

    with pytest.raises(generative.ModelUnavailable):
        Drafter("generative").draft(task(), PROVIDER)


def test_the_estimate_comes_from_similar_completed_work_and_the_providers_rate() -> None:
    from models.drafter import SimilarWork

    similar = SimilarWork(3, budgets=(Decimal("200"), Decimal("300"), Decimal("900")), currency="EUR",
                          days=(1.0, 2.0, 4.0))
    p = ProviderInput("Ana Silva", hourly_rate=Decimal("60.00"))
    result = Drafter().compose(task(similar=similar), p)
    assert ("For reference, 3 similar Logo Design tasks completed on Relay had a typical budget of EUR 300 and "
            "about 2 days from acceptance to delivery. At my rate of 60.00 per hour, that budget covers about "
            "5.0 hours.") in result.text
    assert result.sources["estimate"] == "3 similar Logo Design tasks completed on Relay, and your rate"
    assert "For reference" not in Drafter().compose(task(similar=SimilarWork(0)), p).text
