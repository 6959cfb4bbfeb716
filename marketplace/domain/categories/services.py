"""Categories and the taxonomy the router learns from."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from marketplace.db.models import Category
from routing.taxonomy import CategorySpec, Taxonomy


def list_categories(session: Session) -> list[Category]:
    return list(session.scalars(select(Category).where(Category.active.is_(True)).order_by(Category.name)))


def get_by_slug(session: Session, slug: str) -> Category | None:
    return session.scalar(select(Category).where(Category.slug == slug, Category.active.is_(True)))


def load_taxonomy(session: Session) -> Taxonomy:
    categories = session.scalars(
        select(Category).where(Category.active.is_(True)).options(selectinload(Category.examples))
        .order_by(Category.slug)
    ).all()
    return Taxonomy(tuple(
        CategorySpec(c.slug, c.name, c.description, tuple(e.text for e in c.examples))
        for c in categories if c.examples
    ))
