"""Request-scoped dependencies shared by all controllers."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.orm import Session

from marketplace.db.session import unit_of_work
from marketplace.settings import Settings


def provide_db_session(state: State, request: Request[Any, Any, Any]) -> Generator[Session, None, None]:
    """One unit of work per request: commit when the handler succeeds, then send the jobs it enqueued.

    Litestar exits this generator before the response is sent (and throws the handler's exception into
    it), so a failed commit is an error response, never a success the database does not hold.
    """
    # Read-only: GET and HEAD, and handlers that write nothing marked opt={"readonly": True} (the category
    # preview, which runs the model: on SQLite a write transaction would hold every writer out meanwhile).
    readonly = request.method in {"GET", "HEAD"} or bool(request.route_handler.opt.get("readonly"))
    with unit_of_work(state.db, state.settings, readonly=readonly) as session:
        yield session


def provide_settings(state: State) -> Settings:
    return state.settings
