"""SQL expressions that tell one dialect's query planner what it cannot know, and the row lock the services
take on rows they are about to change."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
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


_Query = TypeVar("_Query", bound=Select[Any])


def for_change(query: _Query, *, skip_locked: bool = False) -> _Query:
    """``query`` locking the rows it selects until the transaction ends, for a change that keeps their keys
    (PostgreSQL's ``FOR NO KEY UPDATE``; SQLite has no row locks and locks the whole database on the first write).

    A task or profile row is locked to change its status, category or counts, never its id. ``FOR UPDATE`` would
    also block every insert of a row that references it: PostgreSQL checks a foreign key by taking ``FOR KEY
    SHARE`` on the referenced row, which only ``FOR UPDATE`` conflicts with. A customer's message, a drafted
    clarifying question or a staff example on a task would then wait for a routing batch (or an accept) that
    holds the task, however long that takes. Two transactions that both lock a row this way still queue.
    """
    return query.with_for_update(key_share=True, skip_locked=skip_locked)
