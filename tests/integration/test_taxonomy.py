"""The routing engine's copy of the taxonomy: read again after every kind of change, and only then."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, select, update

from marketplace.db.models import Category, CategoryExample
from marketplace.domain.routing import engine as engine_module
from marketplace.domain.routing.engine import RoutingEngine
from routing.taxonomy import Taxonomy


def texts(taxonomy: Taxonomy, slug: str) -> list[str]:
    return next(list(c.examples) for c in taxonomy.categories if c.slug == slug)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the engine's full reads of the taxonomy."""
    counted: list[int] = []
    load = engine_module.load_taxonomy

    def counting(session: Any) -> Taxonomy:
        counted.append(1)
        return load(session)

    monkeypatch.setattr(engine_module, "load_taxonomy", counting)
    return counted


def add_example(db: Any, slug: str, text: str) -> int:
    with db.session() as session:
        category_id = session.scalar(select(Category.id).where(Category.slug == slug))
        example = CategoryExample(category_id=category_id, text=text, source="staff")
        session.add(example)
        session.flush()
        return example.id


def test_the_engine_reads_the_taxonomy_again_after_each_kind_of_change_and_only_then(db: Any, reads: list[int]
                                                                                      ) -> None:
    engine = RoutingEngine()

    def current() -> Taxonomy:
        with db.session(readonly=True) as session:
            return engine.taxonomy(session)

    first = current()
    assert current() is first and len(reads) == 1  # nothing changed: not read again

    older = add_example(db, "plumbing", "Swap the old radiator valves for thermostatic ones.")
    add_example(db, "plumbing", "Unblock the shower drain in the upstairs bathroom.")
    added = current()
    assert added.version != first.version and len(reads) == 2
    assert texts(added, "plumbing")[-2:] == ["Swap the old radiator valves for thermostatic ones.",
                                             "Unblock the shower drain in the upstairs bathroom."]

    # The newest example goes and another comes in the same transaction: on SQLite the new row gets the same id,
    # and there are as many examples as before.
    with db.session() as session:
        newest = session.scalar(select(CategoryExample).order_by(CategoryExample.id.desc()).limit(1))
        category_id, newest_id = newest.category_id, newest.id
        session.delete(newest)
        session.flush()
        replacement = CategoryExample(category_id=category_id, text="Fit a new outdoor tap by the garage.",
                                      source="staff")
        session.add(replacement)
        session.flush()
        same_id = replacement.id == newest_id
    replaced = texts(current(), "plumbing")
    assert "Fit a new outdoor tap by the garage." in replaced
    assert "Unblock the shower drain in the upstairs bathroom." not in replaced
    assert same_id or db.url.startswith("postgresql")  # the case this checks, where it can happen

    with db.session() as session:  # an example that is not the newest goes (an erased task's, say)
        session.execute(delete(CategoryExample).where(CategoryExample.id == older))
    assert "Swap the old radiator valves for thermostatic ones." not in texts(current(), "plumbing")

    with db.session() as session:
        name = session.scalar(select(Category.name).where(Category.slug == "plumbing"))
    try:
        with db.session() as session:
            session.execute(update(Category).where(Category.slug == "plumbing").values(name="Plumbing & heating"))
        assert next(c.name for c in current().categories if c.slug == "plumbing") == "Plumbing & heating"
        with db.session() as session:
            session.execute(update(Category).where(Category.slug == "plumbing").values(active=False))
        assert "plumbing" not in {c.slug for c in current().categories}
    finally:
        with db.session() as session:
            session.execute(update(Category).where(Category.slug == "plumbing").values(name=name, active=True))
    reads_so_far = len(reads)
    assert current() is current() and len(reads) == reads_so_far + 1


def test_the_engine_reads_the_taxonomy_again_after_a_while_even_when_nothing_seems_changed(
        db: Any, reads: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    engine = RoutingEngine()
    with db.session(readonly=True) as session:
        engine.taxonomy(session)
        monkeypatch.setattr(engine_module, "TAXONOMY_AGE", 0.0)
        engine.taxonomy(session)
    assert len(reads) == 2


@pytest.mark.model
def test_a_renamed_category_is_named_anew_in_decisions_and_suggestions_without_a_refit(db: Any, settings) -> None:
    """A new name leaves the taxonomy version (slugs and examples) and so the fitted model as they are; what the
    router names categories with must still be the new name."""
    from marketplace.domain.routing.suggest import suggest_categories

    engine = engine_module.get_engine()
    with db.session(readonly=True) as session:
        model, taxonomy = engine.router(session, tuning=False)
    with db.session() as session:
        name = session.scalar(select(Category.name).where(Category.slug == "plumbing"))
        session.execute(update(Category).where(Category.slug == "plumbing").values(name="Plumbing & heating"))
    try:
        with db.session(readonly=True) as session:
            again, renamed = engine.router(session, tuning=False)
            suggestion = suggest_categories(session, settings, "Leaking tap",
                                            "The kitchen tap drips all night and the pipe under the sink is wet.")
        assert again is model and renamed.version == taxonomy.version  # no refit
        assert renamed.by_slug()["plumbing"].name == "Plumbing & heating"
        assert suggestion is not None and suggestion.categories[0][:2] == ("plumbing", "Plumbing & heating")
    finally:
        with db.session() as session:
            session.execute(update(Category).where(Category.slug == "plumbing").values(name=name))
