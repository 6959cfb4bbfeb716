"""API schemas for categories."""

from __future__ import annotations

import msgspec


class CategoryOut(msgspec.Struct):
    slug: str
    name: str
    description: str
