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
    fields = dict(title="Logo for a bakery",
                  description="We open in spring. The logo goes on bags and the shop front.",
                  category_name="Logo Design", playbook=PLAYBOOK, questions=QUESTIONS)
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
