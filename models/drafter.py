"""Drafter: a provider's first reply to an offer, grounded only in the task, the provider's profile and work
already done on Relay. Two engines behind one interface (``Drafter.draft``):

* the composer (always available, fast, deterministic): every part is built from a field of the inputs and
  says where it came from, so it cannot invent facts;
* the generative engine: the local SmolLM2-135M-Instruct (models.generative) rewrites the composer's opening
  into natural prose; the grounding guard (models.grounding) drops any sentence that brings in a fact the
  inputs do not contain, and the composer's own opening is kept when too little survives. The plan, the
  questions, the estimate and the terms always come from the composer, word for word.

Drafts are suggestions: a person edits or approves one before anything is sent.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from models.grounding import check

COMPOSER_ID = "relay-composer-2"
Engine = Literal["composer", "generative", "auto"]


@dataclass(frozen=True, slots=True)
class SimilarWork:
    """Completed tasks of the same category: what they cost and how long they took."""

    tasks: int
    budgets: tuple[Decimal, ...] = ()
    currency: str | None = None
    days: tuple[float, ...] = ()  # from acceptance to delivery


@dataclass(frozen=True, slots=True)
class DraftInput:
    title: str
    description: str
    category_name: str | None = None
    playbook: tuple[str, ...] = ()
    questions: tuple[str, ...] = ()
    budget_amount: Decimal | None = None
    budget_currency: str | None = None
    deadline: datetime | None = None
    similar: SimilarWork | None = None


@dataclass(frozen=True, slots=True)
class ProviderInput:
    display_name: str
    headline: str = ""
    skills: tuple[str, ...] = ()
    hourly_rate: Decimal | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class DraftResult:
    text: str
    engine: str  # the engine whose text this is: "composer" or "generative"
    model_id: str
    sources: dict[str, str] = field(default_factory=dict)  # part of the draft -> where it came from
    weights_hash: str | None = None  # of the generative model, when it was run
    guard: dict[str, Any] | None = None  # the grounding guard's verdict on the generated text
    tokens: int = 0
    seconds: float = 0.0


def was_edited(draft: str, sent: str) -> bool:
    """Whether what a person sent differs from the draft it started from (whitespace aside)."""
    return " ".join(draft.split()) != " ".join(sent.split())


def _first_sentence(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    for stop in (". ", "? ", "! "):
        if stop in text[:limit]:
            return text[: text.index(stop) + 1]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + "…"


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}".removesuffix(".00")


@dataclass(frozen=True, slots=True)
class _Part:
    key: str
    text: str
    source: str = ""


# Measured on the demo taxonomy (bench/drafting.py): with SmolLM2-135M this plain instruction kept more
# generated openings than longer ones, few-shot examples or a one-sentence task; most are still rejected.
REWRITE_SYSTEM = "You rewrite a freelancer's reply so it reads naturally. Keep every fact. Add nothing."
REWRITE_TOKENS = 60
OPENING = ("greeting", "introduction", "scope")


class Drafter:
    """``engine``: "composer", "generative", or "auto" (generative when its model is installed)."""

    def __init__(self, engine: Engine = "composer", generative: Any = None) -> None:
        if engine not in ("composer", "generative", "auto"):
            raise ValueError(f"unknown draft engine {engine!r}")
        self.engine = engine
        self._generative = generative

    def _model(self) -> Any:
        if self._generative is None:
            from models.generative import load_generative

            self._generative = load_generative()
        return self._generative

    def draft(self, task: DraftInput, provider: ProviderInput) -> DraftResult:
        composed = self.compose(task, provider)
        if self.engine == "composer":
            return composed
        from models.generative import ModelUnavailable

        try:
            model = self._model()
        except ModelUnavailable:
            if self.engine == "generative":
                raise
            return composed
        parts = self._parts(task, provider)
        opening = [p for p in parts if p.key in OPENING]
        notes = " ".join(p.text for p in opening)
        generation = model.generate(REWRITE_SYSTEM, f"Rewrite:\n{notes}", max_new_tokens=REWRITE_TOKENS)
        verdict = check(generation.text, [notes, task.title, task.description, task.category_name or "",
                                          provider.display_name, provider.headline, provider.description,
                                          " ".join(provider.skills)])
        run = {"weights_hash": model.weights_hash, "guard": verdict.as_dict(), "tokens": generation.tokens,
               "seconds": round(generation.seconds, 3)}
        if not verdict.accepted:  # the composer's text, with the record of what the model wrote and why not
            return DraftResult(composed.text, "composer", f"{COMPOSER_ID} (generated text rejected: "
                                                          f"{model.model_id})", composed.sources, **run)
        body = [p for p in parts if p.key not in OPENING]
        sources = {"opening": f"rewritten by {model.model_id} from the task and your profile, checked "
                              "sentence by sentence against them",
                   **{p.key: p.source for p in body if p.source}}
        text = "\n\n".join([verdict.text, *(p.text for p in body)])
        return DraftResult(text, "generative", model.model_id, sources, **run)

    def clarifying_question(self, task: DraftInput, closest: list[str]) -> DraftResult:
        """The question staff may send a customer whose task routing could not place: what kind of work it
        is, with the categories routing found closest as examples. Composer only: a question to a customer
        must not guess."""
        text = (f"Hello, thank you for posting \u201c{task.title.strip()}\u201d. We want to offer it to the right "
                "people, and from the description alone we are not sure what kind of work it is.")
        sources = {"greeting": "the task title"}
        if closest:
            named = ", ".join(closest[:-1]) + f" or {closest[-1]}" if len(closest) > 1 else closest[0]
            text += f" Is it closest to {named}, or something else?"
            sources["examples"] = "the categories routing found closest"
        text += (" Could you tell us a little more about what you need done, and where?"
                 "\n\nThe Relay team")
        return DraftResult(text, "composer", COMPOSER_ID, sources)

    def compose(self, task: DraftInput, provider: ProviderInput) -> DraftResult:
        parts = self._parts(task, provider)
        return DraftResult("\n\n".join(p.text for p in parts), "composer", COMPOSER_ID,
                           {p.key: p.source for p in parts if p.source})

    def _parts(self, task: DraftInput, provider: ProviderInput) -> list[_Part]:
        parts = [_Part("greeting", f"Hello, thank you for posting \u201c{task.title.strip()}\u201d.")]
        intro = f"I'm {provider.display_name}"
        if provider.headline:
            intro += f", {provider.headline.strip().rstrip('.')}"
        parts.append(_Part("introduction", intro + ".", "your profile"))
        parts.append(_Part("scope", f"As I understand it from your description: "
                                    f"\u201c{_first_sentence(task.description)}\u201d", "the task description"))
        if task.playbook:
            steps = "\n".join(f"{i}. {step}" for i, step in enumerate(task.playbook, 1))
            label = f" for {task.category_name.lower()}" if task.category_name else ""
            parts.append(_Part("plan", f"How I would approach it{label}:\n{steps}",
                               f"the {task.category_name or 'category'} playbook"))
        if provider.skills:
            parts.append(_Part("skills", "Relevant skills: " + ", ".join(provider.skills[:6]) + ".", "your profile"))
        if estimate := self._estimate(task, provider):
            parts.append(estimate)
        questions = list(task.questions)
        if task.budget_amount is None:
            questions.append("What budget do you have in mind?")
        if task.deadline is None:
            questions.append("When do you need this finished?")
        if questions:
            parts.append(_Part("questions", "Before I start, could you tell me:\n" + "\n".join(f"- {q}" for q in questions),
                               "the category's questions and what the task does not say yet"))
        terms = []
        if task.budget_amount is not None:
            terms.append(f"your budget of {task.budget_amount} {task.budget_currency or ''}".strip())
        if task.deadline is not None:
            terms.append(f"your deadline of {task.deadline:%d %B %Y}")
        sentences = [f"I have noted {' and '.join(terms)}."] if terms else []
        if provider.hourly_rate is not None:
            sentences.append(f"My rate is {provider.hourly_rate} per hour.")
        if sentences:
            parts.append(_Part("terms", " ".join(sentences), "the task's budget and deadline, your rate"))
        parts.append(_Part("signoff", "Best regards,\n" + provider.display_name))
        return parts

    @staticmethod
    def _estimate(task: DraftInput, provider: ProviderInput) -> _Part | None:
        """What similar completed tasks cost and took, and what that budget buys at the provider's rate."""
        similar = task.similar
        if similar is None or similar.tasks == 0 or not (similar.budgets or similar.days):
            return None
        what = f"{similar.tasks} similar {task.category_name or ''} task{'s' if similar.tasks != 1 else ''}"
        what = " ".join(what.split())
        said = []
        budget = None
        if similar.budgets:
            budget = Decimal(statistics.median(similar.budgets)).quantize(Decimal("0.01"))
            said.append(f"a typical budget of {similar.currency or ''} {_money(budget)}".replace("  ", " "))
        if similar.days:
            days = statistics.median(similar.days)
            said.append("about a day from acceptance to delivery" if days < 1.5
                        else f"about {round(days)} days from acceptance to delivery")
        text = f"For reference, {what} completed on Relay had " + " and ".join(said) + "."
        source = f"{what} completed on Relay"
        if budget is not None and provider.hourly_rate and provider.hourly_rate > 0:
            hours = (budget / provider.hourly_rate).quantize(Decimal("0.1"))
            text += f" At my rate of {provider.hourly_rate} per hour, that budget covers about {hours} hours."
            source += ", and your rate"
        return _Part("estimate", text, source)
