"""The SQLite backend of the store: one file, one connection, the embedded default.

Split by table group: :mod:`.database` (the connection and its transactions),
:mod:`.migrations` (the schema), :mod:`.conversations` (conversations, turns, votes),
:mod:`.inbox` (platform events) and :mod:`.vectors` (the embedding cache). This package is
the only place in the bot that imports ``aiosqlite`` or writes SQL for SQLite.
"""

from __future__ import annotations

import os

from bot.store.sqlite.conversations import SqliteConversations, SqliteFeedback
from bot.store.sqlite.database import Database
from bot.store.sqlite.inbox import SqliteInbox
from bot.store.sqlite.migrations import MIGRATIONS, SCHEMA_VERSION, migrate
from bot.store.sqlite.vectors import SqliteVectors

__all__ = ["SCHEMA_VERSION", "SqliteStore"]


class SqliteStore:
    """:class:`~bot.store.protocols.Store` on one SQLite file (or ``":memory:"``).

    Build it with :meth:`open` in ``main()``, pass its parts in, and :meth:`close` it at
    shutdown. Every operation is a coroutine, safe to call from many tasks at once.
    """

    def __init__(self, db: Database) -> None:
        """Wrap an open database; use :meth:`open` instead."""
        self._db = db
        self._conversations = SqliteConversations(db)
        self._inbox = SqliteInbox(db)
        self._feedback = SqliteFeedback(db)
        self._vectors = SqliteVectors(db)

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> SqliteStore:
        """Open (creating if needed) the database at ``path`` and migrate its schema.

        Raises:
            StoreError: the file cannot be created or opened, is not a database, or its
                schema is newer than this code knows.
        """
        return cls(await Database.open(path, lambda conn: migrate(conn, MIGRATIONS)))

    def __repr__(self) -> str:
        state = "closed" if self._db.closed else "open"
        return f"<SqliteStore {self._db.path!r} {state}>"

    @property
    def location(self) -> str:
        return self._db.path

    @property
    def conversations(self) -> SqliteConversations:
        return self._conversations

    @property
    def inbox(self) -> SqliteInbox:
        return self._inbox

    @property
    def feedback(self) -> SqliteFeedback:
        return self._feedback

    @property
    def vectors(self) -> SqliteVectors:
        return self._vectors

    async def take_ownership(self) -> None:
        await self._db.take_ownership()

    async def close(self) -> None:
        await self._db.close()
