"""SQL expressions that tell one dialect's query planner what it cannot know."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Boolean


class likely(FunctionElement[bool]):  # lower case: named after the SQL function, like sqlalchemy.func's
    """``condition``, marked as true for most of the rows the query looks at, so that no index on its column
    is used to narrow them down.

    SQLite plans without table statistics and takes every index to be selective: for ``WHERE id IN (64 ids)
    AND status = 'submitted'`` it walked the (status, created_at) index, i.e. every waiting task, instead of
    looking up 64 primary keys. With 15,000 tasks waiting that made each routing batch's queries scan all of
    them (bench/README.md). On SQLite this compiles to its ``likely()``, elsewhere to the condition itself
    (PostgreSQL keeps statistics and plans these by primary key).
    """

    type = Boolean()
    name = "likely"
    inherit_cache = True

    def __init__(self, condition: ColumnElement[bool]) -> None:
        super().__init__(condition)


@compiles(likely)
def _condition(element: likely, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.clauses, **kw)})"


@compiles(likely, "sqlite")
def _sqlite_likely(element: likely, compiler: Any, **kw: Any) -> str:
    return f"likely({compiler.process(element.clauses, **kw)})"
