"""Request-scoped dependencies shared by all controllers."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.orm import Session

from marketplace import jobs
from marketplace.settings import Settings


def provide_db_session(state: State, request: Request[Any, Any, Any]) -> Generator[Session, None, None]:
    """One unit of work per request: commit when the handler succeeds, then send the jobs it enqueued.

    Litestar exits this generator before the response is sent, so a failed commit is an error response,
    never a success the database does not hold.
    """
    db = state.db
    readonly = request.method in {"GET", "HEAD"}
    session: Session = (db.readonly_sessionmaker if readonly else db.sessionmaker)()
    try:
        yield session
        session.commit()
        pending = jobs.take_pending(session)
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    jobs.dispatch_after_commit(db, pending, state.settings)


def provide_settings(state: State) -> Settings:
    return state.settings
