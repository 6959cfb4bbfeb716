"""A versioned set of categories, each with the example task descriptions the router learns from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True, slots=True)
class CategorySpec:
    slug: str
    name: str
    description: str
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    categories: tuple[CategorySpec, ...]

    def __post_init__(self) -> None:
        slugs = [c.slug for c in self.categories]
        if len(set(slugs)) != len(slugs):
            raise ValueError("duplicate category slug in taxonomy")
        for c in self.categories:
            if not c.examples:
                raise ValueError(f"category {c.slug!r} has no examples")

    @cached_property  # read on every decision; hashing every example each time cost more than deciding
    def version(self) -> str:
        """Content hash: changes whenever a category or an example changes."""
        payload = json.dumps([[c.slug, sorted(c.examples)] for c in sorted(self.categories, key=lambda c: c.slug)])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def by_slug(self) -> dict[str, CategorySpec]:
        return {c.slug: c for c in self.categories}
