"""``python -m bot store migrate FROM TO``: an SQLite file's data into PostgreSQL (and
back), checked through the store itself, and the refusals that keep data safe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.contract import Source
from bot.store import open_store
from bot.store.sqlite import SqliteStore
from tests.test_cli import bot, child_env

SOURCES = (Source(1, "SQLite", "https://en.wikipedia.org/wiki/SQLite", "wikipedia", 0.9),)


async def filled(path: Path) -> dict[str, int]:
    """An SQLite file as a bot leaves it: answered and pending questions, a summary, a
    vote, a handled command, cached vectors. Returns the turn ids it made."""
    store = await SqliteStore.open(path)
    try:
        first = await store.inbox.claim("slack", "E1", "slack:T:C:1", "What is SQLite?", "{}")
        second = await store.inbox.claim("slack", "E2", "slack:T:C:1", "Is it fast?", "{}")
        pending = await store.inbox.claim("discord", "m9", "discord:1:2", "Still open?", "{}")
        assert first and second and pending
        await store.conversations.finish_turn(first.turn_id, "A database.")
        await store.conversations.finish_turn(second.turn_id, "Yes [1].", sources=SOURCES)
        await store.conversations.save_summary("slack:T:C:1", "About SQLite.", first.turn_id)
        await store.inbox.finish("slack", "E1", "answered")
        await store.inbox.finish("slack", "E2", "answered")
        await store.feedback.record("slack", "E1", "UALICE", "up")
        assert await store.inbox.handled("slack", "C:reset-1")
        await store.vectors.save_vectors("m", [("h1", b"\x00\x01")], max_entries=10)
        return {"first": first.turn_id, "second": second.turn_id, "pending": pending.turn_id}
    finally:
        await store.close()


async def test_an_sqlite_file_moves_into_postgresql_whole(
    tmp_path: Path, postgres_url: str
) -> None:
    path = tmp_path / "bot.db"
    ids = await filled(path)

    run = await bot("store", "migrate", str(path), postgres_url)

    assert run.code == 0, run.err
    assert "conversations: 2 row(s)" in run.out and "turns: 3 row(s)" in run.out
    store = await open_store(postgres_url, lease_s=60)
    try:
        state = await store.conversations.load("slack:T:C:1")
        assert state.summary == "About SQLite." and state.summary_upto == ids["first"]
        assert [(t.id, t.answer) for t in state.turns] == [(ids["second"], "Yes [1].")]
        assert await store.conversations.last_sources("slack:T:C:1") == SOURCES
        transcript = await store.conversations.transcript("slack:T:C:1")
        assert transcript is not None and transcript.turns[0].feedback_up == 1
        # Redeliveries and replays are still recognised; ids go on after the copied ones.
        assert await store.inbox.claim("slack", "E1", "slack:T:C:1", "again", "{}") is None
        assert not await store.inbox.handled("slack", "C:reset-1")
        fresh = await store.inbox.claim("slack", "E3", "slack:T:C:1", "New?", "{}")
        assert fresh is not None and fresh.turn_id > max(ids.values())
        # The question left pending is the new deployment's to answer, at once.
        (left,) = await store.inbox.recover(platforms=["discord"], max_age_s=86_400)
        assert left.claim is not None and left.claim.turn_id == ids["pending"]
        assert await store.vectors.vectors("m", ["h1"]) == {"h1": b"\x00\x01"}
    finally:
        await store.close()


async def test_and_back_into_a_new_sqlite_file(tmp_path: Path, postgres_url: str) -> None:
    ids = await filled(tmp_path / "bot.db")
    assert (await bot("store", "migrate", str(tmp_path / "bot.db"), postgres_url)).code == 0

    back = tmp_path / "again.db"
    run = await bot("store", "migrate", postgres_url, str(back))

    assert run.code == 0, run.err
    store = await SqliteStore.open(back)
    try:
        info = await store.conversations.info("slack:T:C:1")
        assert info is not None and info.turn_count == 2 and info.has_summary
        fresh = await store.inbox.claim("slack", "E4", "slack:T:C:1", "New?", "{}")
        assert fresh is not None and fresh.turn_id > max(ids.values())
    finally:
        await store.close()


async def test_the_target_comes_from_database_url_and_the_password_is_never_shown(
    tmp_path: Path, postgres_url: str
) -> None:
    await filled(tmp_path / "bot.db")
    url = postgres_url.replace("postgres@", "postgres:s3cret@", 1)  # trust ignores it

    run = await bot("store", "migrate", str(tmp_path / "bot.db"), env=child_env(DATABASE_URL=url))

    assert run.code == 0, run.err
    assert "s3cret" not in run.out + run.err and "***" in run.out


async def test_the_target_may_come_from_database_url_file(
    tmp_path: Path, postgres_url: str
) -> None:
    await filled(tmp_path / "bot.db")
    secret = tmp_path / "database-url"
    secret.write_text(postgres_url.replace("postgres@", "postgres:s3cret@", 1) + "\n", "utf-8")

    run = await bot(
        "store", "migrate", str(tmp_path / "bot.db"), env=child_env(DATABASE_URL_FILE=str(secret))
    )

    assert run.code == 0, run.err
    assert "conversations: 2 row(s)" in run.out
    assert "s3cret" not in run.out + run.err


async def test_a_target_with_conversations_is_refused_and_left_alone(
    tmp_path: Path, postgres_url: str
) -> None:
    await filled(tmp_path / "bot.db")
    assert (await bot("store", "migrate", str(tmp_path / "bot.db"), postgres_url)).code == 0

    again = await bot("store", "migrate", str(tmp_path / "bot.db"), postgres_url)

    assert again.code == 1
    assert "already holds 2 conversation(s)" in again.err and "Nothing was copied" in again.err
    store = await open_store(postgres_url)
    try:
        assert len(await store.conversations.list_all()) == 2
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["nowhere.db", "postgresql://db/x"], "There is no database file at nowhere.db."),
        (["{file}"], "Say where to"),
        (["{file}", "{file}"], "FROM and TO are the same database."),
    ],
)
async def test_mistakes_are_named_before_anything_is_opened(
    tmp_path: Path, args: list[str], said: str
) -> None:
    file = tmp_path / "bot.db"
    await asyncio.to_thread(file.write_bytes, b"")
    run = await bot("store", "migrate", *(a.format(file=file) for a in args))
    assert run.code == 2
    assert said in run.err
