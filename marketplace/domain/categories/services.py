"""Categories and the taxonomy the router learns from."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.db.models import Category, CategoryExample
from marketplace.errors import InvalidInput
from routing.taxonomy import CategorySpec, Taxonomy


def list_categories(session: Session) -> list[Category]:
    return list(session.scalars(select(Category).where(Category.active.is_(True)).order_by(Category.name)))


def get_by_slug(session: Session, slug: str) -> Category | None:
    return session.scalar(select(Category).where(Category.slug == slug, Category.active.is_(True)))


def require_active(session: Session, slugs: list[str], field: str) -> None:
    """Raise InvalidInput (on ``field``) naming every slug that is not an active category."""
    known = set(session.scalars(select(Category.slug).where(Category.slug.in_(slugs), Category.active.is_(True))))
    unknown = [s for s in slugs if s not in known]
    if unknown:
        raise InvalidInput(f"Unknown categories: {', '.join(unknown)}. See GET /api/v1/categories.",
                           errors=[{"field": field, "message": f"unknown: {', '.join(unknown)}"}])


def taxonomy_mark(session: Session) -> tuple[object, ...]:
    """What moves whenever :func:`load_taxonomy` would read something new, for the price of a few index lookups
    instead of every example: the active categories as the taxonomy shows them, the number of examples and the
    newest one (examples are added and deleted, never edited). The newest row itself, not only its id: SQLite
    gives a new row the id of the newest one if that was just deleted (an erased task's learned example)."""
    categories = tuple(session.execute(
        select(Category.slug, Category.name, Category.description).where(Category.active.is_(True))
        .order_by(Category.slug)
    ).all())
    newest = select(CategoryExample).order_by(CategoryExample.id.desc()).limit(1).subquery()
    examples = session.execute(select(  # one round trip
        select(func.count(CategoryExample.id)).scalar_subquery(),
        *(select(column).scalar_subquery() for column in (newest.c.id, newest.c.category_id, newest.c.text)),
    )).one()
    return categories, tuple(examples)


def load_taxonomy(session: Session) -> Taxonomy:
    """The active categories with their examples. Plain columns, not ORM objects: there can be tens of thousands
    of examples. The routing engine reads it again only when :func:`taxonomy_mark` moves."""
    rows = session.execute(
        select(Category.slug, Category.name, Category.description, CategoryExample.text)
        .join(CategoryExample, CategoryExample.category_id == Category.id)
        .where(Category.active.is_(True))
        .order_by(Category.slug, CategoryExample.id)
    ).all()
    grouped: dict[str, tuple[str, str, list[str]]] = {}
    for slug, name, description, text in rows:
        grouped.setdefault(slug, (name, description, []))[2].append(text)
    return Taxonomy(tuple(
        CategorySpec(slug, name, description, tuple(texts)) for slug, (name, description, texts) in grouped.items()
    ))
