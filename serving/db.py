"""Engine and sessions: SQLite (embedded default, WAL, busy timeout) or PostgreSQL by URL.

SQLite: several processes (the API and its workers) write the same file. Write transactions start with
``BEGIN IMMEDIATE`` so a read-then-write transaction takes the lock up front and waits for it (busy
timeout) instead of failing half-way; read transactions stay deferred and never block writers (WAL).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event below issues BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def make_engines(url: str) -> tuple[Engine, Engine]:
    """(read engine, write engine) for ``url``; the same engine twice except on SQLite."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, immediate=False), _sqlite_engine(url, immediate=True)
    engine = create_engine(url, pool_pre_ping=True)
    return engine, engine


class Database:
    """The engines and session factories of one database."""

    def __init__(self, url: str):
        self.url = url
        self.read_engine, self.engine = make_engines(url)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception."""
        factory = self._write if write else self._read
        with factory() as s:
            with s.begin():
                yield s

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.engine is not self.read_engine:
            self.engine.dispose()
