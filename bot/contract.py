"""What crosses the seam between the chat adapters and the research pipeline.

Adapters import this module (and :mod:`bot.adapters.base`) and nothing of the pipeline:
it pulls in no LangChain, numpy, torch or agent, only the standard library, so a platform
adapter stays a thin translator that can be loaded and tested on its own.

* :class:`InboundMessage` is the one message type an adapter hands in. Its ``target`` is a
  reply target of the adapter's own type (a channel and message id, a Slack thread), so
  adapter code gets its own objects back without casts.
* :func:`conversation_key` / :func:`split_conversation_key` name one conversation and
  round-trip: an adapter gets its channel and thread ids back from the key.
* :class:`TurnListener` receives a turn's progress, the answer body as it streams, and the
  final structured :class:`Reply`, which each adapter renders its own way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, Protocol, TypeVar
from urllib.parse import quote, unquote

Platform = Literal["terminal", "discord", "slack", "inmemory"]
Status = Literal["answered", "degraded", "failed"]
# A reader's verdict on an answer (a platform's feedback buttons).
Rating = Literal["up", "down"]
NoticeKind = Literal[
    "source_unavailable",
    "question_cut",
    "memory_unavailable",
    "llm_unavailable",
    "answer_cut",
    "ranking_unavailable",
    # The answer's quality: the model cited nothing, echoed its prompt, looped, said nothing.
    "answer_uncited",
    "answer_echo",
    "answer_repeat",
    "answer_empty",
    # No sentence of the answer matched a source; a second answer that does follows it.
    "answer_again",
    "no_sources",
]

TargetT = TypeVar("TargetT")
TargetT_co = TypeVar("TargetT_co", covariant=True)

# Every id a platform hands out goes into the key percent-encoded, so a ``:`` inside an id
# (or an empty-looking part) can never make two different conversations share a key.
_KEY_SAFE = "-._~@!$&'()*+,;=/"


def conversation_key(platform: str, *parts: str) -> str:
    """The key that names one conversation, e.g. ``slack:T1:C2:1700000000.0001``.

    Each Discord channel or thread, each Slack thread and each terminal session gets its
    own key. Parts are percent-encoded (``:`` and ``%`` at least), so
    :func:`split_conversation_key` gives them back exactly.

    Raises:
        ValueError: no parts, or an empty part.
    """
    if not parts:
        raise ValueError("a conversation key needs at least one part")
    if any(not part for part in (platform, *parts)):
        raise ValueError(f"a conversation key has no empty parts: {(platform, *parts)!r}")
    return ":".join(quote(part, safe=_KEY_SAFE) for part in (platform, *parts))


def split_conversation_key(key: str) -> tuple[str, tuple[str, ...]]:
    """``(platform, parts)`` of a key made by :func:`conversation_key`.

    Raises:
        ValueError: the string is not such a key.
    """
    platform, *parts = (unquote(part) for part in key.split(":"))
    if not platform or not parts or not all(parts):
        raise ValueError(f"not a conversation key: {key!r}")
    return platform, tuple(parts)


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote an inbound message, as the platform tells it."""

    id: str
    name: str
    is_bot: bool = False
    # The bot itself (its own messages echo back on most platforms).
    is_self: bool = False
    # Whether this author may run admin commands here; the adapter decides, from the
    # platform's roles and the configured admin ids. None: the platform could not be
    # asked just now (an admin command is then refused with "try again").
    is_admin: bool | None = False


@dataclass(frozen=True, slots=True)
class InboundMessage(Generic[TargetT]):
    """One question or command, as every adapter hands it to the intake.

    ``event_id`` is the platform's id for the event or message (a redelivery carries the
    same one), ``sent_at`` is when the platform says it was sent (timezone-aware), and
    ``target`` is where the answer goes, in the adapter's own type.

    ``follow_up`` marks a message that was not addressed to the bot (no mention), seen
    only because it was written in a thread: the intake answers it only in a conversation
    the bot already has, and otherwise ignores it.
    """

    text: str
    author: Author
    conversation: str
    platform: Platform
    event_id: str
    sent_at: datetime
    target: TargetT = field(compare=False, repr=False)
    follow_up: bool = False


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """What a source's fused ``score`` was made from, for the curious and for benches.

    ``dense`` is the cosine of the question and the source, ``bm25`` the lexical score
    (BM25 with the title and the intro as fields, among the turn's candidates), ``prior``
    the weak prior from ``source_rank``, the position in the source's own result list.
    """

    dense: float = 0.0
    bm25: float = 0.0
    prior: float = 0.0
    source_rank: int = 0


@dataclass(frozen=True, slots=True)
class Source:
    """A numbered source of an answer; ``n`` is the number the answer cites as ``[n]``.

    ``revision`` names exactly what was read (a Wikipedia revision id, or a Hacker News
    item id with its points at read time) and ``permalink`` links to that version; both
    are empty when the source did not say.
    """

    n: int
    title: str
    url: str
    source: str
    score: float
    cited: bool = False
    parts: ScoreParts | None = None
    revision: str = ""
    permalink: str = ""


@dataclass(frozen=True, slots=True)
class WeakCitation:
    """A ``[n]`` in the body whose sentence source ``n`` barely supports.

    ``support`` is the best similarity of the sentence to one of the source's passages,
    below the configured threshold.
    """

    n: int
    sentence: str
    support: float


@dataclass(frozen=True, slots=True)
class Attribution:
    """A citation the bot added to a sentence the model left uncited.

    ``sentence`` is the sentence as it stands in the body (without the citation);
    ``support`` is its best similarity to one of source ``n``'s passages, at least the
    configured attribution threshold. Renderings add ``[n]`` to the sentence and say that
    the bot added it.
    """

    n: int
    sentence: str
    support: float


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the reader of an answer should know, in two registers.

    ``user`` is safe in a public channel: no hosts, URLs, config keys or shell commands.
    ``operator`` says how to fix it (``ollama pull llama3.2``, ``[llm].timeout_s``) and goes
    only to the log and to the terminal, never into a chat. An empty ``user`` line makes a
    notice for operators only (the body already tells the reader), counted all the same.
    """

    kind: NoticeKind
    user: str
    operator: str = ""


@dataclass(frozen=True, slots=True)
class Neutralised:
    """What the pipeline made harmless in untrusted text before any adapter saw it."""

    links: int = 0
    mentions: int = 0

    def __add__(self, other: Neutralised) -> Neutralised:
        return Neutralised(self.links + other.links, self.mentions + other.mentions)


@dataclass(frozen=True, slots=True)
class Reply:
    """What one turn produced, for an adapter to render.

    ``body`` is the answer in Markdown, exactly what was streamed through
    :meth:`TurnListener.on_text`; the Sources list and the notices are not part of it.
    """

    question: str
    body: str
    conversation: str
    status: Status = "answered"
    sources: tuple[Source, ...] = ()
    notices: tuple[Notice, ...] = ()
    topics: tuple[str, ...] = ()
    unavailable: tuple[str, ...] = ()
    neutralised: Neutralised = Neutralised()
    timings: Mapping[str, float] = field(default_factory=dict)
    # Citations checked against their sources and found weak (empty when not checked).
    weak_citations: tuple[WeakCitation, ...] = ()
    # Citations the bot added to sentences the model left uncited (not part of ``body``).
    attributions: tuple[Attribution, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    @property
    def cited(self) -> tuple[Source, ...]:
        """The sources the body cites, in number order (all of them when it cites none)."""
        chosen = tuple(s for s in self.sources if s.cited)
        return chosen or self.sources


class TurnListener(Protocol):
    """Receives one turn as it happens: progress steps, body text, then the final reply.

    Everything in ``Reply.body`` reaches :meth:`on_text`, in order. :meth:`on_reply` is
    called once, last, also when the turn failed.
    """

    async def on_progress(self, step: str) -> None: ...

    async def on_text(self, text: str) -> None: ...

    async def on_reply(self, reply: Reply) -> None: ...


class SilentListener:
    """A listener that shows nothing (``ask --json``, background work)."""

    async def on_progress(self, step: str) -> None:
        return None

    async def on_text(self, text: str) -> None:
        return None

    async def on_reply(self, reply: Reply) -> None:
        return None


SILENT = SilentListener()
