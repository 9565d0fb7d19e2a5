"""How the inbox keeps an inbound message and an answer: JSON that rebuilds them after a
crash.

The message is stored with its claim, so a question a crash left unanswered can be
answered by the next process, through the same adapter, to the same reply target; an
answer waiting for delivery is stored whole, so the next process delivers it as it was.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.adapters.base import Adapter
from bot.contract import (
    Attribution,
    Author,
    InboundMessage,
    Neutralised,
    Notice,
    Reply,
    WeakCitation,
)
from bot.store.codec import decode_source, encode_source


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
                is_admin=None if author["is_admin"] is None else bool(author["is_admin"]),
            ),
            conversation=str(raw["conversation"]),
            platform=adapter.platform,
            event_id=str(raw["event_id"]),
            sent_at=datetime.fromisoformat(raw["sent_at"]),
            target=adapter.decode_target(raw["target"]),
        )
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable inbox message: {exc!r}") from exc


def encode_reply(reply: Reply) -> str:
    """The reply as the outbox keeps it (see :func:`decode_reply`)."""
    return json.dumps(
        {
            "question": reply.question,
            "body": reply.body,
            "conversation": reply.conversation,
            "status": reply.status,
            "sources": [encode_source(s) for s in reply.sources],
            "notices": [[n.kind, n.user, n.operator] for n in reply.notices],
            "topics": list(reply.topics),
            "unavailable": list(reply.unavailable),
            "neutralised": [reply.neutralised.links, reply.neutralised.mentions],
            "timings": dict(reply.timings),
            "weak_citations": [[w.n, w.sentence, w.support] for w in reply.weak_citations],
            "attributions": [[a.n, a.sentence, a.support] for a in reply.attributions],
        },
        ensure_ascii=False,
    )


def decode_reply(data: str) -> Reply:
    """The reply back from :func:`encode_reply`.

    Raises:
        ValueError: the stored data is not such a reply.
    """
    try:
        raw = json.loads(data)
        return Reply(
            question=str(raw["question"]),
            body=str(raw["body"]),
            conversation=str(raw["conversation"]),
            status=raw["status"],
            sources=tuple(decode_source(s) for s in raw["sources"]),
            notices=tuple(Notice(kind, str(user), str(op)) for kind, user, op in raw["notices"]),
            topics=tuple(str(t) for t in raw["topics"]),
            unavailable=tuple(str(u) for u in raw["unavailable"]),
            neutralised=Neutralised(*(int(n) for n in raw["neutralised"])),
            timings={str(k): float(v) for k, v in raw["timings"].items()},
            weak_citations=tuple(
                WeakCitation(int(n), str(sentence), float(support))
                for n, sentence, support in raw["weak_citations"]
            ),
            # Replies stored before attributions existed have none.
            attributions=tuple(
                Attribution(int(n), str(sentence), float(support))
                for n, sentence, support in raw.get("attributions", ())
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"unreadable stored reply: {exc!r}") from exc
