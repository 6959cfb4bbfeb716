"""HTTP: the category list (public: it is what customers choose from)."""

from __future__ import annotations

from litestar import Controller, get
from sqlalchemy.orm import Session

from marketplace.domain.categories import services
from marketplace.domain.categories.schemas import CategoryOut


class CategoryController(Controller):
    path = "/api/v1/categories"
    tags = ["categories"]

    @get("/", exclude_from_auth=True, sync_to_thread=True, summary="All active categories")
    def list_all(self, db_session: Session) -> list[CategoryOut]:
        return [CategoryOut(c.slug, c.name, c.description) for c in services.list_categories(db_session)]
