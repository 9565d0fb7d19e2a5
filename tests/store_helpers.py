"""What the store tests need beyond the store's own operations."""

from __future__ import annotations

import itertools

from bot.store import Store

_events = itertools.count(1)


async def begin_turn(store: Store, conversation: str, question: str) -> int:
    """A pending turn for ``question``, as the intake's claim of a new event begins one."""
    claim = await store.inbox.claim("test", f"turn-{next(_events)}", conversation, question, "{}")
    assert claim is not None
    return claim.turn_id
