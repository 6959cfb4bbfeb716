"""Drafter: writes a provider's first reply to an offer, grounded only in the task and the provider's profile.

The composer engine is deterministic: every sentence is built from a field of the inputs, so it cannot
invent facts. (A local generative engine that rewrites the composed draft comes with issue #5.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal


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


@dataclass(frozen=True, slots=True)
class ProviderInput:
    display_name: str
    headline: str = ""
    skills: tuple[str, ...] = ()
    hourly_rate: Decimal | None = None


@dataclass(frozen=True, slots=True)
class DraftResult:
    text: str
    engine: str
    model_id: str
    sources: dict[str, str] = field(default_factory=dict)


def _first_sentence(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    for stop in (". ", "? ", "! "):
        if stop in text[:limit]:
            return text[: text.index(stop) + 1]
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + "…"


class Drafter:
    engine = "composer"
    model_id = "relay-composer-1"

    def compose(self, task: DraftInput, provider: ProviderInput) -> DraftResult:
        parts: list[str] = []
        sources: dict[str, str] = {}
        parts.append(f"Hello, thank you for posting \u201c{task.title.strip()}\u201d.")
        intro = f"I'm {provider.display_name}"
        if provider.headline:
            intro += f", {provider.headline.strip().rstrip('.')}"
        parts.append(intro + ".")
        sources["introduction"] = "provider profile"
        parts.append(f"As I understand it from your description: \u201c{_first_sentence(task.description)}\u201d")
        sources["scope"] = "task description"
        if task.playbook:
            steps = "\n".join(f"{i}. {step}" for i, step in enumerate(task.playbook, 1))
            label = f" for {task.category_name.lower()}" if task.category_name else ""
            parts.append(f"How I would approach it{label}:\n{steps}")
            sources["plan"] = "category playbook"
        if provider.skills:
            parts.append("Relevant skills: " + ", ".join(provider.skills[:6]) + ".")
            sources["skills"] = "provider profile"
        questions = list(task.questions)
        if task.budget_amount is None:
            questions.append("What budget do you have in mind?")
        if task.deadline is None:
            questions.append("When do you need this finished?")
        if questions:
            parts.append("Before I start, could you tell me:\n" + "\n".join(f"- {q}" for q in questions))
            sources["questions"] = "category questions and missing task fields"
        terms = []
        if task.budget_amount is not None:
            terms.append(f"your budget of {task.budget_amount} {task.budget_currency or ''}".strip())
        if task.deadline is not None:
            terms.append(f"your deadline of {task.deadline:%d %B %Y}")
        noted = " and ".join(terms)
        if noted:
            parts.append(f"I have noted {noted}.")
        if provider.hourly_rate is not None:
            parts.append(f"My rate is {provider.hourly_rate} per hour.")
        if terms or provider.hourly_rate is not None:
            sources["terms"] = "task budget and deadline, provider rate"
        parts.append("Best regards,\n" + provider.display_name)
        return DraftResult("\n\n".join(parts), self.engine, self.model_id, sources)
