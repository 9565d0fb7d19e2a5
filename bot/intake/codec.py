"""How the inbox keeps an inbound message: JSON that rebuilds it after a crash.

The message is stored with its claim, so a question a crash left unanswered can be
answered by the next process, through the same adapter, to the same reply target.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.adapters.base import Adapter
from bot.contract import Author, InboundMessage


def encode_message(message: InboundMessage[Any], adapter: Adapter[Any]) -> str:
    """The message as the inbox keeps it, so a crash cannot lose how to answer it."""
    author = message.author
    return json.dumps(
        {
            "text": message.text,
            "author": {
                "id": author.id,
                "name": author.name,
                "is_bot": author.is_bot,
                "is_admin": author.is_admin,
            },
            "conversation": message.conversation,
            "platform": message.platform,
            "event_id": message.event_id,
            "sent_at": message.sent_at.isoformat(),
            "target": dict(adapter.encode_target(message.target)),
        },
        ensure_ascii=False,
    )


def decode_message(data: str, adapter: Adapter[Any]) -> InboundMessage[Any]:
    """The message back from :func:`encode_message`.

    Raises:
        ValueError: the stored data is not a message of this adapter.
    """
    try:
        raw = json.loads(data)
        author: Mapping[str, Any] = raw["author"]
        if raw["platform"] != adapter.platform:
            raise ValueError(f"a {raw['platform']} event, not {adapter.platform}")
        return InboundMessage(
            text=str(raw["text"]),
            author=Author(
                id=str(author["id"]),
                name=str(author["name"]),
                is_bot=bool(author["is_bot"]),
                is_admin=bool(author["is_admin"]),
            ),
            conversation=str(raw["conversation"]),
            platform=adapter.platform,
            event_id=str(raw["event_id"]),
            sent_at=datetime.fromisoformat(raw["sent_at"]),
            target=adapter.decode_target(raw["target"]),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable inbox message: {exc!r}") from exc
