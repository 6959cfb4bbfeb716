"""Request-scoped dependencies shared by all controllers."""

from __future__ import annotations

from collections.abc import Generator
from litestar.datastructures import State
from sqlalchemy.orm import Session

from marketplace import jobs
from marketplace.settings import Settings


def provide_db_session(state: State) -> Generator[Session, None, None]:
    """One unit of work per request: commit when the handler succeeds, then send the jobs it enqueued.

    Litestar exits this generator before the response is sent, so a failed commit is an error response,
    never a success the database does not hold.
    """
    db = state.db
    session: Session = db.sessionmaker()
    try:
        yield session
        session.commit()
        pending = jobs.take_pending(session)
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
    if pending:
        with db.session() as dispatch_session:
            jobs.dispatch(dispatch_session, pending, state.settings)


def provide_settings(state: State) -> Settings:
    return state.settings
