"""Category suggestions while a customer types: the live router's view of a draft task, stored nowhere."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from marketplace.domain.routing.engine import NoTaxonomy, get_engine, task_text
from marketplace.settings import Settings


@dataclass(frozen=True, slots=True)
class Suggestion:
    categories: list[tuple[str, str, float]]  # (slug, name, probability): what routing would choose
    alternatives: list[tuple[str, str, float]]  # the next best, for a request the router would not place
    abstain: bool  # routing would hand this text to staff


def suggest_categories(session: Session, settings: Settings, title: str, description: str) -> Suggestion | None:
    """What routing would decide for this title and description right now (same model, same thresholds; a
    tuned model newly fitted decides here once loaded, in the workers once they have embedded every provider
    profile with it, 512 more per routing batch: at once for a few hundred providers).

    The text is scrubbed like a task's and encoded without being remembered anywhere: a preview of a task
    that may never be posted leaves no trace. The first call in a process loads the model."""
    engine = get_engine()
    try:
        # ranking=False: this process may never rank a provider (the API's), so it embeds no profile for a
        # tuned model
        model, taxonomy = engine.router(session, tuning=settings.router_tuning, ranking=False)
    except NoTaxonomy:  # no categories yet: nothing to suggest, the customer picks none or staff place it
        return None
    names = {c.slug: c.name for c in taxonomy.categories}
    decision = model.decide_many([task_text(title, description)])[0]
    chosen = [(slug, names.get(slug, slug), score) for slug, score in decision.categories]
    ranking = [(slug, names.get(slug, slug), score) for slug, score in decision.ranking
               if slug not in {c[0] for c in chosen}]
    return Suggestion(chosen, ranking[:3], decision.abstain)
