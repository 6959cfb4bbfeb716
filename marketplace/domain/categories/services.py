"""Categories and the taxonomy the router learns from."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.db.models import Category, CategoryExample
from routing.taxonomy import CategorySpec, Taxonomy


def list_categories(session: Session) -> list[Category]:
    return list(session.scalars(select(Category).where(Category.active.is_(True)).order_by(Category.name)))


def get_by_slug(session: Session, slug: str) -> Category | None:
    return session.scalar(select(Category).where(Category.slug == slug, Category.active.is_(True)))


def load_taxonomy(session: Session) -> Taxonomy:
    """The active categories with their examples. Read on every routing decision (to notice a new version), so
    it selects plain columns: building ORM objects for every example cost more than the decision itself."""
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
