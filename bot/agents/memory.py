"""The memory agent: conversations kept in one SQLite file, and the inbox of platform events.

Every conversation key (see :func:`bot.domain.conversation_key`) owns one ``sessions`` row
and its ``turns``. A turn is stored in two steps so a crash mid-answer still leaves the
question on record: :meth:`MemoryStore.begin_turn` saves the question as ``pending`` and
:meth:`MemoryStore.finish_turn` adds the answer (and its numbered sources). Older turns are
folded into a rolling ``summary``; ``summary_upto`` is the id of the last turn it covers,
and :meth:`MemoryStore.load` returns only the answered turns after it.

The ``inbox`` makes every platform event produce exactly one answer across redeliveries,
crashes and restarts. :meth:`~MemoryStore.claim` records the event and begins its turn in
one transaction, so of any number of concurrent deliveries (in this process or another)
exactly one gets a :class:`Claim`. The event then moves on::

    claim ──► pending ──finish_event──► answered | undelivered
                 │  ▲
                 │  └── recover (after a crash: attempts + 1, handed back to the intake)
                 ├──── recover: older than max_age_s ──────────► expired
                 └──── recover: attempts >= max_attempts ──────► quarantined

``attempts`` counts the processes that started on the event: a claim is attempt 1, each
recovery adds one, and :meth:`~MemoryStore.release` takes back an attempt that a graceful
shutdown cancelled. An event still pending at start-up with ``max_attempts`` attempts
therefore crashed the bot that many times and is quarantined rather than tried again.

Schema (version 4; ``PRAGMA user_version`` holds the version)::

    sessions                                 turns
    ┌────────────────────────────────┐       ┌──────────────────────────────────────────┐
    │ key           TEXT  PK         │◄──┐   │ id           INTEGER PK AUTOINCREMENT    │◄─┐
    │ created_at    TEXT  ISO-8601   │   └───┤ session_key  TEXT FK ON DELETE CASCADE   │  │
    │ updated_at    TEXT  ISO-8601   │       │ question     TEXT                        │  │
    │ summary       TEXT  ('' = none)│       │ answer       TEXT NULL (NULL = pending)  │  │
    │ summary_upto  INTEGER turn id  │       │ status       'pending' | 'answered'      │  │
    └────────────────────────────────┘       │ created_at   TEXT ISO-8601               │  │
                                             │ answered_at  TEXT NULL                   │  │
                                             │ sources      TEXT JSON list (v2)         │  │
                                             └──────────────────────────────────────────┘  │
    inbox (v2)                                                                             │
    ┌────────────────────────────────────────────────────────────────────────────┐         │
    │ platform      TEXT  ┐ PK                                                   │         │
    │ event_id      TEXT  ┘                                                      │         │
    │ conversation  TEXT  conversation key (no FK: the row outlives a reset)     │         │
    │ question      TEXT  to begin a new turn if a reset deleted the old one     │         │
    │ turn_id       INTEGER NULL FK ON DELETE SET NULL, unique ──────────────────┼─────────┘
    │ status        'pending' | 'answered' | 'undelivered' | 'expired'           │
    │               | 'quarantined'                                              │
    │ attempts      INTEGER >= 0                                                 │
    │ message       TEXT  opaque JSON from the intake, to rebuild the event      │
    │ reply_id      TEXT NULL  the platform's id of the bot's reply              │
    │ received_at   TEXT  ISO-8601                                               │
    │ updated_at    TEXT  ISO-8601                                               │
    └────────────────────────────────────────────────────────────────────────────┘
    feedback (v3)  turn_id INTEGER FK turns ON DELETE CASCADE ┐ PK, user_id TEXT ┘,
                   rating 'up' | 'down', created_at TEXT: one vote per reader and turn
    index turns_by_session (session_key, id)
    index inbox_by_status  (status, received_at)   serves recover()
    index inbox_by_turn    (turn_id) unique        serves ON DELETE SET NULL and transcript()

    embedding_cache (v4): model TEXT, text_hash TEXT (PK together), vector BLOB (float32),
    stored_at INTEGER (a counter, for evicting the oldest), index embedding_cache_by_age

Timestamps are ISO-8601 in UTC with microseconds (``2024-05-01T12:00:00.123456+00:00``),
so they sort as text. ``AUTOINCREMENT`` makes turn ids grow forever and never be reused,
even after a reset: a late :meth:`~MemoryStore.finish_turn` for a deleted turn can then
never land on somebody else's new turn, and ``summary_upto`` comparisons stay meaningful.

Errors: every method except :meth:`~MemoryStore.close` raises :class:`MemoryStoreError`
when SQLite fails (disk full, file locked past the busy timeout, corrupt file or stored
sources that are not valid JSON) or when the store has been closed;
:meth:`~MemoryStore.open` also raises it when the file's schema is newer than this code.
``sqlite3`` errors never escape this module. Refusals that are part of normal operation (a
turn or session deleted meanwhile, a summary that would move backwards, a duplicate event,
an unknown event) are reported by returning ``False`` or ``None``, not by raising.
:class:`ValueError` / :class:`TypeError` mean a programming error in the caller (a naive
``now``, an unknown status), never a state of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast, get_args

import aiosqlite

from bot.contract import ScoreParts, Source
from bot.domain import ConversationState, SessionInfo, StoredTurn
from bot.errors import MemoryStoreError

_log = logging.getLogger(__name__)

# How long a statement waits for another process's lock (the CLI reading or migrating, say)
# before SQLite gives up with "database is locked".
_BUSY_TIMEOUT_MS = 5_000

# Migration N (1-based) is _MIGRATIONS[N - 1]; a database at user_version V gets the steps
# after V, all in one transaction together with the new user_version, so a crash while
# migrating leaves the old version intact. Append new steps; never edit a released one.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE sessions (
            key          TEXT    NOT NULL PRIMARY KEY CHECK (typeof(key) = 'text'),
            created_at   TEXT    NOT NULL,
            updated_at   TEXT    NOT NULL,
            summary      TEXT    NOT NULL DEFAULT '' CHECK (typeof(summary) = 'text'),
            summary_upto INTEGER NOT NULL DEFAULT 0 CHECK (summary_upto >= 0)
        )
        """,
        """
        CREATE TABLE turns (
            id          INTEGER PRIMARY KEY AUTOINCREMENT,
            session_key TEXT    NOT NULL REFERENCES sessions (key) ON DELETE CASCADE,
            question    TEXT    NOT NULL CHECK (typeof(question) = 'text'),
            answer      TEXT    CHECK (answer IS NULL OR typeof(answer) = 'text'),
            status      TEXT    NOT NULL CHECK (status IN ('pending', 'answered')),
            created_at  TEXT    NOT NULL,
            answered_at TEXT,
            CHECK ((status = 'answered') = (answer IS NOT NULL))
        )
        """,
        # Serves load()/transcript() and the ON DELETE CASCADE lookup of a session's turns.
        "CREATE INDEX turns_by_session ON turns (session_key, id)",
    ),
    (
        "ALTER TABLE turns ADD COLUMN sources TEXT NOT NULL DEFAULT '[]'",
        # No foreign key on conversation: a reset deletes the session, and the row must stay
        # so a redelivery of the same event is still recognised as a duplicate.
        """
        CREATE TABLE inbox (
            platform     TEXT    NOT NULL CHECK (typeof(platform) = 'text'),
            event_id     TEXT    NOT NULL CHECK (typeof(event_id) = 'text'),
            conversation TEXT    NOT NULL CHECK (typeof(conversation) = 'text'),
            question     TEXT    NOT NULL CHECK (typeof(question) = 'text'),
            turn_id      INTEGER REFERENCES turns (id) ON DELETE SET NULL,
            status       TEXT    NOT NULL CHECK (status IN
                             ('pending', 'answered', 'undelivered', 'expired', 'quarantined')),
            attempts     INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
            message      TEXT    NOT NULL CHECK (typeof(message) = 'text'),
            reply_id     TEXT    CHECK (reply_id IS NULL OR typeof(reply_id) = 'text'),
            received_at  TEXT    NOT NULL,
            updated_at   TEXT    NOT NULL,
            PRIMARY KEY (platform, event_id)
        )
        """,
        "CREATE INDEX inbox_by_status ON inbox (status, received_at)",
        # Without it every turn a reset deletes would scan the inbox for ON DELETE SET NULL.
        # Unique, so transcript()'s LEFT JOIN can never repeat a turn; NULLs do not collide.
        "CREATE UNIQUE INDEX inbox_by_turn ON inbox (turn_id)",
    ),
    (
        # One vote per reader and turn; a second click replaces the first. The votes go
        # with their turn when a reset deletes it.
        """
        CREATE TABLE feedback (
            turn_id    INTEGER NOT NULL REFERENCES turns (id) ON DELETE CASCADE,
            user_id    TEXT    NOT NULL CHECK (typeof(user_id) = 'text'),
            rating     TEXT    NOT NULL CHECK (rating IN ('up', 'down')),
            created_at TEXT    NOT NULL,
            PRIMARY KEY (turn_id, user_id)
        )
        """,
    ),
    (
        # Vectors by (model, text hash), so a restart does not embed the same articles again.
        # Its own table, dropped and rebuilt freely: nothing else refers to it.
        """
        CREATE TABLE embedding_cache (
            model      TEXT    NOT NULL CHECK (typeof(model) = 'text'),
            text_hash  TEXT    NOT NULL CHECK (typeof(text_hash) = 'text'),
            vector     BLOB    NOT NULL CHECK (typeof(vector) = 'blob'),
            stored_at  INTEGER NOT NULL,
            PRIMARY KEY (model, text_hash)
        )
        """,
        # Serves the eviction of the oldest rows once the table is over its bound.
        "CREATE INDEX embedding_cache_by_age ON embedding_cache (stored_at)",
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)

_TURN_COLUMNS = "id, question, answer, status, created_at"

_SESSION_SELECT = (
    "SELECT s.key, s.created_at, s.updated_at, s.summary != '' AS has_summary, "
    "       COUNT(t.id) AS turn_count, COALESCE(MAX(t.id), 0) AS last_turn, "
    "       (SELECT COUNT(*) FROM feedback AS f JOIN turns AS ft ON ft.id = f.turn_id "
    "        WHERE ft.session_key = s.key AND f.rating = 'up') AS feedback_up, "
    "       (SELECT COUNT(*) FROM feedback AS f JOIN turns AS ft ON ft.id = f.turn_id "
    "        WHERE ft.session_key = s.key AND f.rating = 'down') AS feedback_down "
    "FROM sessions AS s LEFT JOIN turns AS t ON t.session_key = s.key "
)

_INBOX_COLUMNS = (
    "i.platform, i.event_id, i.conversation, i.question, i.turn_id, i.message, i.reply_id, "
    "i.attempts, i.received_at"
)

TurnStatus = Literal["pending", "answered", "expired", "quarantined"]
_TURN_STATUSES: frozenset[str] = frozenset(get_args(TurnStatus))
Rating = Literal["up", "down"]
_RATINGS: frozenset[str] = frozenset(get_args(Rating))
EventOutcome = Literal["answered", "undelivered"]
_EVENT_OUTCOMES: frozenset[str] = frozenset(get_args(EventOutcome))


@dataclass(frozen=True, slots=True)
class Claim:
    """The right to answer one event: its pending turn, in the session as it is now.

    ``session_started`` is the session's ``created_at``. It changes when the conversation
    is reset and created again, so the pipeline can tell that a cache it holds for the
    conversation belongs to a session that no longer exists.
    """

    turn_id: int
    session_started: str


@dataclass(frozen=True, slots=True)
class RecoveredEvent:
    """A pending event that no live process is answering, handed back by :meth:`recover`.

    ``message`` is the intake's own JSON, as given to :meth:`~MemoryStore.claim`.
    ``reply_id`` is set when a reply was already posted (the crash came after it), so the
    intake edits that message instead of posting a second one. ``attempts`` includes this
    one. ``claim`` is None for an event this very call quarantined: it is handed back once,
    so the intake can tell its author it was given up, and is never answered.
    """

    platform: str
    event_id: str
    conversation: str
    message: str
    reply_id: str | None
    attempts: int
    received_at: str
    claim: Claim | None

    @property
    def quarantined(self) -> bool:
        return self.claim is None


def _recovered_event(row: sqlite3.Row, claim: Claim | None) -> RecoveredEvent:
    return RecoveredEvent(
        platform=str(row["platform"]),
        event_id=str(row["event_id"]),
        conversation=str(row["conversation"]),
        message=str(row["message"]),
        reply_id=None if row["reply_id"] is None else str(row["reply_id"]),
        attempts=int(row["attempts"]),
        received_at=str(row["received_at"]),
        claim=claim,
    )


def _now() -> str:
    return _stamp(datetime.now(UTC))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _turn(row: sqlite3.Row) -> StoredTurn:
    raw = str(row["status"])
    status = cast(TurnStatus, raw) if raw in _TURN_STATUSES else "pending"
    return StoredTurn(
        id=int(row["id"]),
        question=str(row["question"]),
        answer=None if row["answer"] is None else str(row["answer"]),
        status=status,
        created_at=str(row["created_at"]),
        feedback_up=_column(row, "feedback_up"),
        feedback_down=_column(row, "feedback_down"),
    )


def _column(row: sqlite3.Row, name: str) -> int:
    # ``name in row`` would search the values: a Row is a sequence, not a mapping.
    return int(row[name]) if name in row.keys() else 0  # noqa: SIM118


def _session_info(row: sqlite3.Row) -> SessionInfo:
    return SessionInfo(
        key=str(row["key"]),
        created_at=str(row["created_at"]),
        updated_at=str(row["updated_at"]),
        turn_count=int(row["turn_count"]),
        has_summary=bool(row["has_summary"]),
        feedback_up=int(row["feedback_up"]),
        feedback_down=int(row["feedback_down"]),
    )


def _sources_json(sources: Iterable[Source]) -> str:
    return json.dumps([dataclasses.asdict(s) for s in sources], ensure_ascii=False)


def _sources(text: str) -> tuple[Source, ...]:
    """Decode a ``turns.sources`` value; raises MemoryStoreError when it is not ours."""
    try:
        items = json.loads(text)
        return tuple(
            Source(
                n=int(item["n"]),
                title=str(item["title"]),
                url=str(item["url"]),
                source=str(item["source"]),
                score=float(item["score"]),
                cited=bool(item.get("cited", False)),
                parts=_parts(item.get("parts")),
                revision=str(item.get("revision", "")),
                permalink=str(item.get("permalink", "")),
            )
            for item in items
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise MemoryStoreError(f"the stored sources are not valid: {exc}") from exc


def _parts(value: object) -> ScoreParts | None:
    """Score parts as stored; turns saved before they existed have none."""
    if not isinstance(value, dict):
        return None
    return ScoreParts(
        dense=float(value["dense"]),
        bm25=float(value["bm25"]),
        prior=float(value["prior"]),
        source_rank=int(value["source_rank"]),
    )


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


async def _fetchall(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def _fetchone(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Row | None:
    rows = await _fetchall(conn, sql, params)
    return rows[0] if rows else None


async def _write(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> int:
    """Run one data-changing statement; return the number of rows it changed."""
    async with conn.execute(sql, params) as cursor:
        return cursor.rowcount


async def _migrate(conn: aiosqlite.Connection, migrations: Iterable[Sequence[str]]) -> None:
    """Bring the schema to ``len(migrations)``; a no-op when it is already there.

    Raises:
        MemoryStoreError: the file was written by a newer version of this code.
        sqlite3.Error: a step failed (the caller translates it).
    """
    steps = list(migrations)

    async def version() -> int:
        row = await _fetchone(conn, "PRAGMA user_version")
        current = int(row[0]) if row is not None else 0
        if current > len(steps):
            raise MemoryStoreError(
                f"the memory database has schema version {current}, but this version of "
                f"research-agent only knows versions up to {len(steps)}; upgrade "
                "research-agent or point [memory].database at another file"
            )
        return current

    # Most opens find the schema current: check without taking the write lock, so the CLI
    # opening the file while the bot writes does not queue behind it.
    if await version() == len(steps):
        return
    await conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the lock: another process may have migrated meanwhile.
        current = await version()
        for number, statements in enumerate(steps[current:], start=current + 1):
            for statement in statements:
                await conn.execute(statement)
            # PRAGMA does not take parameters; ``number`` is an int we computed.
            await conn.execute(f"PRAGMA user_version = {int(number)}")
            _log.info("memory schema migrated to version %d", number)
        await conn.execute("COMMIT")
    except BaseException:
        await _rollback(conn)
        raise


async def _rollback(conn: aiosqlite.Connection) -> None:
    try:
        await conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        # "no transaction is active": BEGIN itself failed, or COMMIT got through before a
        # cancellation reached us. Either way there is nothing left to undo.
        _log.debug("memory store rollback skipped: %s", exc)


class MemoryStore:
    """Conversation memory on one shared aiosqlite connection.

    Build it with :meth:`open` in ``main()``, pass it in, and :meth:`close` it at shutdown.
    All methods are coroutines and safe to call concurrently from many tasks.
    """

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        """Wrap an already configured connection; use :meth:`open` instead."""
        self._conn: aiosqlite.Connection | None = conn
        self._path = path
        # Every coroutine shares one connection, and SQLite transactions belong to the
        # connection, not to the coroutine: if two tasks interleaved their statements, one
        # task's COMMIT would commit the other's half-done writes, its ROLLBACK would undo
        # them, and a read could see rows another task has not committed yet. So each
        # operation, reads included, holds this lock from its BEGIN to its COMMIT.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"<MemoryStore {self._path!r} {state}>"

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> MemoryStore:
        """Open (creating if needed) the database at ``path`` and migrate its schema.

        ``":memory:"`` gives a private in-memory database. The parent directory of a file
        path is created.

        Raises:
            MemoryStoreError: the directory or file cannot be created or opened, the file
                is not a database, or its schema is newer than this code knows.
        """
        location = os.fspath(path)
        if location != ":memory:":
            try:
                await asyncio.to_thread(Path(location).parent.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                _log.error("cannot create the directory for %s: %s", location, exc)
                raise MemoryStoreError(f"cannot create the directory for {location}") from exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _BUSY_TIMEOUT_MS / 1000
        delay = 0.01
        while True:
            try:
                return cls(await cls._connect(location), location)
            except sqlite3.OperationalError as exc:
                # Two processes creating the same new file (two `ask`s at once): the switch
                # to WAL can report "locked" without waiting on busy_timeout. A moment
                # later the other one is done.
                if "locked" not in str(exc) or loop.time() + delay > deadline:
                    _log.error("cannot prepare memory database %s: %s", location, exc)
                    raise MemoryStoreError(
                        f"cannot prepare memory database {location}: {exc}"
                    ) from exc
                _log.debug("memory database %s busy while opening; retrying", location)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            except sqlite3.Error as exc:
                _log.error("cannot open memory database %s: %s", location, exc)
                raise MemoryStoreError(f"cannot open memory database {location}: {exc}") from exc

    @classmethod
    async def _connect(cls, location: str) -> aiosqlite.Connection:
        """One connection, configured and migrated; closed again if that fails."""
        # isolation_level=None: the sqlite3 module must not open transactions on its own;
        # every transaction here is an explicit BEGIN ... COMMIT.
        conn = await aiosqlite.connect(location, isolation_level=None)
        try:
            await cls._configure(conn, location)
        except BaseException:
            await conn.close()
            raise
        return conn

    @staticmethod
    async def _configure(conn: aiosqlite.Connection, location: str) -> None:
        conn.row_factory = aiosqlite.Row
        # Set first, so the journal-mode switch and the migration already wait politely.
        await conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        # Per connection and off by default: without it ON DELETE CASCADE does nothing.
        await conn.execute("PRAGMA foreign_keys = ON")
        # WAL lets another process (the CLI's `sessions list`) read while the bot writes;
        # with WAL, NORMAL can lose the last commits on power loss, never corrupt the file.
        row = await _fetchone(conn, "PRAGMA journal_mode = WAL")
        mode = str(row[0]).lower() if row is not None else "?"
        if mode != "wal" and location != ":memory:":
            _log.warning("memory database %s stays in journal mode %s, not WAL", location, mode)
        await conn.execute("PRAGMA synchronous = NORMAL")
        await _migrate(conn, _MIGRATIONS)

    async def close(self) -> None:
        """Wait for the operation in progress, then close the connection. Safe to repeat."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                await conn.close()
            except sqlite3.Error as exc:
                # Closing is best effort at shutdown; committed data is already on disk.
                _log.warning("closing memory database %s failed: %s", self._path, exc)

    @contextlib.asynccontextmanager
    async def _transaction(
        self, operation: str, key: str | None, *, write: bool
    ) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the lock and one transaction; translate SQLite errors at this boundary.

        Writes use BEGIN IMMEDIATE, taking SQLite's write lock up front: a deferred
        transaction that reads and then writes can fail with SQLITE_BUSY half-way when
        another process wrote in between, whereas IMMEDIATE waits (busy_timeout) at BEGIN.
        Reads use a plain BEGIN so their statements see one snapshot.
        """
        async with self._lock:
            conn = self._conn
            if conn is None:
                raise MemoryStoreError(f"{operation} on a closed memory store")
            try:
                await conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield conn
                await conn.execute("COMMIT")
            except BaseException as exc:
                # Also on CancelledError: aiosqlite runs statements in order on its one
                # worker thread, so this ROLLBACK runs after any statement the cancelled
                # await had already queued, and before the next holder of the lock begins.
                await _rollback(conn)
                if isinstance(exc, sqlite3.Error):
                    _log.warning("memory store %s failed (key=%r): %r", operation, key, exc)
                    raise MemoryStoreError(f"memory store {operation} failed: {exc}") from exc
                raise

    @staticmethod
    async def _start_turn(conn: aiosqlite.Connection, key: str, question: str, now: str) -> Claim:
        """Create or touch the session ``key`` and insert a pending turn for ``question``.

        Runs inside the caller's write transaction. Raises sqlite3.Error, which the
        transaction translates.
        """
        session = await _fetchone(
            conn,
            "INSERT INTO sessions (key, created_at, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at "
            "RETURNING created_at",
            (key, now, now),
        )
        turn = await _fetchone(
            conn,
            "INSERT INTO turns (session_key, question, status, created_at) "
            "VALUES (?, ?, 'pending', ?) RETURNING id",
            (key, question, now),
        )
        if session is None or turn is None:  # pragma: no cover - RETURNING always gives a row
            raise sqlite3.OperationalError("INSERT ... RETURNING returned no row")
        return Claim(turn_id=int(turn["id"]), session_started=str(session["created_at"]))

    async def begin_turn(self, key: str, question: str) -> int:
        """Store ``question`` as a pending turn of ``key``, creating the session if new.

        Returns the new turn's id (ids only ever grow). Raises MemoryStoreError.
        """
        async with self._transaction("begin_turn", key, write=True) as conn:
            claim = await self._start_turn(conn, key, question, _now())
        return claim.turn_id

    async def claim(
        self, platform: str, event_id: str, conversation: str, question: str, message: str
    ) -> Claim | None:
        """Record the event ``(platform, event_id)`` and begin its turn, unless it is known.

        In one transaction: the inbox row is inserted as ``pending`` with one attempt, the
        session ``conversation`` is created or touched and the pending turn for
        ``question`` is inserted (as :meth:`begin_turn` does). ``message`` is the intake's
        opaque JSON, handed back by :meth:`recover` after a crash.

        Returns None, writing nothing, when the event was already claimed, by this or
        another process and whatever became of it since: that caller must not answer.
        Raises MemoryStoreError.
        """
        now = _now()
        async with self._transaction("claim", conversation, write=True) as conn:
            inserted = await _write(
                conn,
                "INSERT INTO inbox (platform, event_id, conversation, question, status, "
                "                   attempts, message, received_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'pending', 1, ?, ?, ?) "
                "ON CONFLICT (platform, event_id) DO NOTHING",
                (platform, event_id, conversation, question, message, now, now),
            )
            if not inserted:
                return None
            claim = await self._start_turn(conn, conversation, question, now)
            await _write(
                conn,
                "UPDATE inbox SET turn_id = ? WHERE platform = ? AND event_id = ?",
                (claim.turn_id, platform, event_id),
            )
        return claim

    async def finish_turn(
        self, turn_id: int, answer: str, *, sources: Sequence[Source] = ()
    ) -> bool:
        """Store the answer of turn ``turn_id`` and its numbered sources; mark it answered.

        Also touches the session's ``updated_at``. Returns False when the turn no longer
        exists (its session was reset while the answer was being written). Finishing an
        answered turn again replaces its answer and sources. Raises MemoryStoreError.
        """
        now = _now()
        encoded = _sources_json(sources)
        async with self._transaction("finish_turn", None, write=True) as conn:
            changed = await _write(
                conn,
                "UPDATE turns SET answer = ?, sources = ?, status = 'answered', answered_at = ? "
                "WHERE id = ?",
                (answer, encoded, now, turn_id),
            )
            if changed:
                await _write(
                    conn,
                    "UPDATE sessions SET updated_at = ? "
                    "WHERE key = (SELECT session_key FROM turns WHERE id = ?)",
                    (now, turn_id),
                )
        return changed > 0

    async def vectors(self, model: str, hashes: Sequence[str]) -> dict[str, bytes]:
        """Stored vectors of ``model`` for those of ``hashes`` that have one.

        Raises MemoryStoreError.
        """
        found: dict[str, bytes] = {}
        async with self._transaction("vectors", None, write=False) as conn:
            # SQLite allows 999 parameters in older builds; a turn has a few dozen texts.
            for start in range(0, len(hashes), 500):
                chunk = list(hashes[start : start + 500])
                rows = await _fetchall(
                    conn,
                    "SELECT text_hash, vector FROM embedding_cache WHERE model = ? AND "
                    f"text_hash IN ({_placeholders(len(chunk))})",
                    (model, *chunk),
                )
                found.update((str(r["text_hash"]), bytes(r["vector"])) for r in rows)
        return found

    async def save_vectors(
        self, model: str, vectors: Sequence[tuple[str, bytes]], *, max_entries: int
    ) -> None:
        """Store ``(text hash, vector)`` pairs of ``model``, then evict beyond ``max_entries``.

        Raises MemoryStoreError.
        """
        if not vectors:
            return
        async with self._transaction("save_vectors", None, write=True) as conn:
            row = await _fetchone(conn, "SELECT COALESCE(MAX(stored_at), 0) FROM embedding_cache")
            counter = int(row[0]) if row is not None else 0
            await conn.executemany(
                "INSERT INTO embedding_cache (model, text_hash, vector, stored_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (model, text_hash) "
                "DO UPDATE SET vector = excluded.vector, stored_at = excluded.stored_at",
                [(model, h, v, counter + i) for i, (h, v) in enumerate(vectors, start=1)],
            )
            await _write(
                conn,
                "DELETE FROM embedding_cache WHERE stored_at <= "
                "(SELECT COALESCE(MAX(stored_at), 0) FROM embedding_cache) - ?",
                (max_entries,),
            )

    async def load(self, key: str) -> ConversationState:
        """What the next prompt needs: the summary and the answered turns after it.

        Turns come oldest first; pending turns are left out. An unknown key gives an
        empty state. Raises MemoryStoreError.
        """
        async with self._transaction("load", key, write=False) as conn:
            session = await _fetchone(
                conn, "SELECT summary, summary_upto FROM sessions WHERE key = ?", (key,)
            )
            if session is None:
                return ConversationState(key=key)
            rows = await _fetchall(
                conn,
                f"SELECT {_TURN_COLUMNS} FROM turns "
                "WHERE session_key = ? AND id > ? AND status = 'answered' ORDER BY id",
                (key, session["summary_upto"]),
            )
        return ConversationState(
            key=key,
            summary=str(session["summary"]),
            summary_upto=int(session["summary_upto"]),
            turns=tuple(_turn(row) for row in rows),
        )

    async def transcript(self, key: str) -> ConversationState | None:
        """Every turn of ``key``, pending ones and summarised ones included, oldest first.

        A pending turn whose inbox event was expired or quarantined by :meth:`recover` has
        that status instead of ``pending``. Returns None when the session does not exist.
        Raises MemoryStoreError.
        """
        async with self._transaction("transcript", key, write=False) as conn:
            session = await _fetchone(
                conn, "SELECT summary, summary_upto FROM sessions WHERE key = ?", (key,)
            )
            if session is None:
                return None
            # A pending turn whose event was given up on will never be answered; say so.
            rows = await _fetchall(
                conn,
                "SELECT t.id, t.question, t.answer, t.created_at, "
                "       (SELECT COUNT(*) FROM feedback AS f "
                "        WHERE f.turn_id = t.id AND f.rating = 'up') AS feedback_up, "
                "       (SELECT COUNT(*) FROM feedback AS f "
                "        WHERE f.turn_id = t.id AND f.rating = 'down') AS feedback_down, "
                "       CASE WHEN t.status = 'pending' "
                "                 AND i.status IN ('expired', 'quarantined') "
                "            THEN i.status ELSE t.status END AS status "
                "FROM turns AS t LEFT JOIN inbox AS i ON i.turn_id = t.id "
                "WHERE t.session_key = ? ORDER BY t.id",
                (key,),
            )
        return ConversationState(
            key=key,
            summary=str(session["summary"]),
            summary_upto=int(session["summary_upto"]),
            turns=tuple(_turn(row) for row in rows),
        )

    async def save_summary(self, key: str, summary: str, upto_turn_id: int) -> bool:
        """Replace the summary of ``key`` with one covering every turn up to ``upto_turn_id``.

        Returns False, changing nothing, when the session is gone, when ``upto_turn_id``
        is lower than the current ``summary_upto`` (a slower summariser finishing after a
        newer one), or when it is not an answered turn of this session (the session was
        reset, and perhaps re-created, while the summary was being written). The summary
        does not count as activity: ``updated_at`` is left alone. Raises MemoryStoreError.
        """
        async with self._transaction("save_summary", key, write=True) as conn:
            changed = await _write(
                conn,
                "UPDATE sessions SET summary = ?, summary_upto = ? "
                "WHERE key = ? AND summary_upto <= ? AND EXISTS ("
                "  SELECT 1 FROM turns"
                "  WHERE id = ? AND session_key = ? AND status = 'answered')",
                (summary, upto_turn_id, key, upto_turn_id, upto_turn_id, key),
            )
        return changed > 0

    async def list_sessions(self) -> list[SessionInfo]:
        """Every session, most recently updated first.

        ``turn_count`` counts all stored turns, pending and summarised ones included.
        Raises MemoryStoreError.
        """
        async with self._transaction("list_sessions", None, write=False) as conn:
            rows = await _fetchall(
                conn,
                _SESSION_SELECT + "GROUP BY s.key "
                # The newest turn breaks ties between equal timestamps (a coarse clock).
                "ORDER BY s.updated_at DESC, last_turn DESC, s.key",
            )
        return [_session_info(row) for row in rows]

    async def session(self, key: str) -> SessionInfo | None:
        """The session ``key`` as :meth:`list_sessions` describes it, or None if there is none.

        Raises MemoryStoreError.
        """
        async with self._transaction("session", key, write=False) as conn:
            row = await _fetchone(conn, _SESSION_SELECT + "WHERE s.key = ? GROUP BY s.key", (key,))
        return None if row is None else _session_info(row)

    async def last_sources(self, key: str) -> tuple[Source, ...]:
        """The numbered sources of the most recently answered turn of ``key``.

        "Most recently answered", not "newest": when two questions overlap, the answer the
        user saw last is the one a follow-up like "tell me more about [2]" refers to.
        Returns an empty tuple when the session has no answered turn (or does not exist).
        Raises MemoryStoreError.
        """
        async with self._transaction("last_sources", key, write=False) as conn:
            row = await _fetchone(
                conn,
                "SELECT sources FROM turns WHERE session_key = ? AND status = 'answered' "
                "ORDER BY answered_at DESC, id DESC LIMIT 1",
                (key,),
            )
        return () if row is None else _sources(str(row["sources"]))

    async def reset(self, key: str) -> bool:
        """Delete the session ``key`` and all its turns.

        Returns False when there was no such session. Raises MemoryStoreError.
        """
        async with self._transaction("reset", key, write=True) as conn:
            # The turns go with it: ON DELETE CASCADE, with foreign_keys on. Their inbox
            # rows stay (turn_id becomes NULL), so redeliveries are still recognised.
            deleted = await _write(conn, "DELETE FROM sessions WHERE key = ?", (key,))
        return deleted > 0

    async def record_feedback(
        self, platform: str, event_id: str, user_id: str, rating: Rating
    ) -> bool:
        """Store ``user_id``'s verdict on the answer to event ``(platform, event_id)``.

        A reader has one vote per turn: a later click replaces an earlier one. Returns
        False, storing nothing, when the event is unknown or its turn is gone (reset).

        Raises:
            ValueError: ``rating`` is not ``"up"`` or ``"down"``.
            MemoryStoreError: SQLite failed.
        """
        if rating not in _RATINGS:
            raise ValueError(f"a rating is up or down, not {rating!r}")
        async with self._transaction("record_feedback", None, write=True) as conn:
            changed = await _write(
                conn,
                "INSERT INTO feedback (turn_id, user_id, rating, created_at) "
                "SELECT turn_id, ?, ?, ? FROM inbox "
                "WHERE platform = ? AND event_id = ? AND turn_id IS NOT NULL "
                "ON CONFLICT (turn_id, user_id) DO UPDATE "
                "SET rating = excluded.rating, created_at = excluded.created_at",
                (user_id, rating, _now(), platform, event_id),
            )
        return changed > 0

    # ------------------------------------------------------------------ inbox

    async def record_reply(self, platform: str, event_id: str, reply_id: str) -> None:
        """Remember the platform's id of the reply posted for the event.

        Does nothing when the event is unknown. Raises MemoryStoreError.
        """
        async with self._transaction("record_reply", None, write=True) as conn:
            await _write(
                conn,
                "UPDATE inbox SET reply_id = ?, updated_at = ? WHERE platform = ? AND event_id = ?",
                (reply_id, _now(), platform, event_id),
            )

    async def reply_id(self, platform: str, event_id: str) -> str | None:
        """The id :meth:`record_reply` stored for the event; None if none or no such event.

        Raises MemoryStoreError.
        """
        async with self._transaction("reply_id", None, write=False) as conn:
            row = await _fetchone(
                conn,
                "SELECT reply_id FROM inbox WHERE platform = ? AND event_id = ?",
                (platform, event_id),
            )
        return None if row is None or row["reply_id"] is None else str(row["reply_id"])

    async def finish_event(self, platform: str, event_id: str, status: EventOutcome) -> None:
        """Close the event: ``answered`` (the reply went out) or ``undelivered`` (it could
        not be posted, and will not be retried).

        Any earlier status is overwritten: an answer that arrives after :meth:`recover`
        expired the event still went out. Does nothing when the event is unknown.

        Raises:
            ValueError: ``status`` is not one of the two outcomes.
            MemoryStoreError: SQLite failed.
        """
        if status not in _EVENT_OUTCOMES:
            raise ValueError(f"an event finishes as answered or undelivered, not {status!r}")
        async with self._transaction("finish_event", None, write=True) as conn:
            await _write(
                conn,
                "UPDATE inbox SET status = ?, updated_at = ? WHERE platform = ? AND event_id = ?",
                (status, _now(), platform, event_id),
            )

    async def release(self, platform: str, event_id: str) -> None:
        """Take back the attempt of an event whose turn a graceful shutdown cancelled.

        That attempt did not crash the process, so it must not count towards quarantine:
        ``attempts`` goes down by one (never below 0) and the event stays pending, for the
        next start's :meth:`recover`. Does nothing unless the event is pending.
        Raises MemoryStoreError.
        """
        async with self._transaction("release", None, write=True) as conn:
            await _write(
                conn,
                "UPDATE inbox "
                "SET attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, "
                "    updated_at = ? "
                "WHERE platform = ? AND event_id = ? AND status = 'pending'",
                (_now(), platform, event_id),
            )

    async def recover(
        self,
        *,
        platforms: Collection[str],
        max_age_s: float,
        max_attempts: int = 2,
        now: datetime | None = None,
        received_before: datetime | None = None,
    ) -> list[RecoveredEvent]:
        """At start-up, take over the pending events no process is answering any more.

        In one write transaction:

        1. every pending event received more than ``max_age_s`` before ``now`` (of any
           platform: an adapter that is not running now cannot answer it either) becomes
           ``expired``;
        2. pending events of ``platforms`` with ``attempts >= max_attempts`` become
           ``quarantined``, each logged as a WARNING: they crashed the bot that many times.
           They are returned first, once, with no claim (``RecoveredEvent.quarantined``);
        3. the other pending events of ``platforms`` get one more attempt and are returned,
           oldest first. One whose turn a reset deleted gets a new pending turn for its
           question, in a session created again if needed.

        ``now`` is only the moment ages are measured from (tests pass one); rows are stamped
        with the real clock. Steps 2 and 3 take only events received before
        ``received_before`` when it is given: the process passes its own start time, so
        events its adapters already took (their turns are live) are never handed out twice.

        Raises:
            ValueError: ``now`` is naive, or ``max_attempts`` < 1.
            TypeError: ``platforms`` is a single string.
            MemoryStoreError: SQLite failed.
        """
        if isinstance(platforms, str):
            raise TypeError("platforms is a collection of platform names, not one string")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        moment = datetime.now(UTC) if now is None else now
        if moment.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        cutoff = _stamp(moment - timedelta(seconds=max_age_s))
        if received_before is not None and received_before.tzinfo is None:
            raise ValueError("received_before must be timezone-aware")
        # ISO-8601 UTC stamps sort as text, so "no bound" is any stamp from this millennium.
        before = "9999" if received_before is None else _stamp(received_before)
        chosen = sorted(set(platforms))
        stamp = _now()
        async with self._transaction("recover", None, write=True) as conn:
            expired = await _write(
                conn,
                "UPDATE inbox SET status = 'expired', updated_at = ? "
                "WHERE status = 'pending' AND received_at < ?",
                (stamp, cutoff),
            )
            if expired:
                _log.info("memory inbox: %d pending event(s) expired unanswered", expired)
            if not chosen:
                return []
            given_up = await self._quarantine(conn, chosen, max_attempts, stamp, before)
            return given_up + await self._take_over(conn, chosen, stamp, before)

    @staticmethod
    async def _quarantine(
        conn: aiosqlite.Connection,
        platforms: Sequence[str],
        max_attempts: int,
        stamp: str,
        before: str,
    ) -> list[RecoveredEvent]:
        rows = await _fetchall(
            conn,
            "UPDATE inbox SET status = 'quarantined', updated_at = ? "
            f"WHERE status = 'pending' AND platform IN ({_placeholders(len(platforms))}) "
            "  AND attempts >= ? AND received_at < ? "
            "RETURNING platform, event_id, conversation, message, reply_id, attempts, "
            "          received_at",
            (stamp, *platforms, max_attempts, before),
        )
        quarantined = []
        for row in rows:
            _log.warning(
                "memory inbox: quarantined %s event %s in %s after %d attempts; each one "
                "crashed the bot, so it is not tried again",
                row["platform"],
                row["event_id"],
                row["conversation"],
                row["attempts"],
            )
            quarantined.append(_recovered_event(row, None))
        return sorted(quarantined, key=lambda e: (e.received_at, e.platform, e.event_id))

    async def _take_over(
        self, conn: aiosqlite.Connection, platforms: Sequence[str], stamp: str, before: str
    ) -> list[RecoveredEvent]:
        marks = _placeholders(len(platforms))
        await _write(
            conn,
            "UPDATE inbox SET attempts = attempts + 1, updated_at = ? "
            f"WHERE status = 'pending' AND platform IN ({marks}) AND received_at < ?",
            (stamp, *platforms, before),
        )
        rows = await _fetchall(
            conn,
            f"SELECT {_INBOX_COLUMNS}, s.created_at AS session_started FROM inbox AS i "
            "LEFT JOIN turns AS t ON t.id = i.turn_id "
            "LEFT JOIN sessions AS s ON s.key = t.session_key "
            f"WHERE i.status = 'pending' AND i.platform IN ({marks}) AND i.received_at < ? "
            "ORDER BY i.received_at, i.platform, i.event_id",
            (*platforms, before),
        )
        recovered = []
        for row in rows:
            if row["turn_id"] is None or row["session_started"] is None:
                claim = await self._start_turn(
                    conn, str(row["conversation"]), str(row["question"]), stamp
                )
                await _write(
                    conn,
                    "UPDATE inbox SET turn_id = ? WHERE platform = ? AND event_id = ?",
                    (claim.turn_id, row["platform"], row["event_id"]),
                )
            else:
                claim = Claim(int(row["turn_id"]), str(row["session_started"]))
            recovered.append(_recovered_event(row, claim))
        return recovered
