"""Engines and sessions. Services take a session and never commit; the caller's unit of work does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str) -> Engine:
    # A database error's message names the statement and, by default, the values bound to it: task texts,
    # email addresses, password hashes. Those messages reach logs (a failed job, a 500), so they leave the
    # values out.
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, decide when a transaction begins (see _begin_immediate).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # WAL lets the in-process worker write while the API reads; foreign keys are off by default.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Units of work take the write lock up front: a deferred transaction that reads and then writes
            # fails with "database is locked" when another writer committed in between, where this one waits
            # (busy_timeout). Read-only sessions stay deferred so readers never queue behind a writer (WAL).
            # PostgreSQL needs none of this: its row locks order concurrent writers.
            readonly = conn.get_execution_options().get("relay_readonly", False)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True)


class Database:
    """One engine and session factory per database URL, shared by the API, the worker and the CLI."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.readonly_sessionmaker = sessionmaker(
            self.engine.execution_options(relay_readonly=True), expire_on_commit=False
        )

    @contextmanager
    def session(self, readonly: bool = False) -> Iterator[Session]:
        """A unit of work: commits when the block succeeds, rolls back when it raises."""
        session = (self.readonly_sessionmaker if readonly else self.sessionmaker)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


_databases: dict[str, Database] = {}
_lock = threading.Lock()


def get_database(url: str) -> Database:
    with _lock:
        if url not in _databases:
            _databases[url] = Database(url)
        return _databases[url]


def forget_database(url: str) -> None:
    with _lock:
        db = _databases.pop(url, None)
    if db is not None:
        db.dispose()


@contextmanager
def unit_of_work(db: Database, settings: Any, readonly: bool = False) -> Iterator[Session]:
    """A committed unit of work followed by the dispatch of the jobs it enqueued (see marketplace.jobs)."""
    from marketplace import jobs

    session = (db.readonly_sessionmaker if readonly else db.sessionmaker)()
    try:
        yield session
        session.commit()
        pending = jobs.take_pending(session)
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    jobs.dispatch_after_commit(db, pending, settings)
