"""The commands every platform shares: ``reset``, ``sources``, ``session``, ``help``.

A command is a message whose whole text is one command word, with or without the
platform's prefix (``/reset``, ``reset``, ``@bot reset`` once the adapter has removed the
mention). Commands are answered by the intake and never reach the pipeline. ``reset`` is
for admins; the adapter says who is one (``Author.is_admin``) and how to name them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from bot.adapters.base import Adapter
from bot.contract import InboundMessage
from bot.domain import human_time
from bot.errors import StoreError
from bot.store import ConversationStore

_log = logging.getLogger(__name__)

Command = Literal["reset", "sources", "session", "help"]
_COMMAND = re.compile(r"^[/!]?(reset|sources|session|help)[.!]?$", re.IGNORECASE)

MEMORY_DOWN = "I could not reach my conversation memory just now; please try again."
ADMIN_UNKNOWN = (
    "I could not check just now whether you may reset this conversation; please try again "
    "in a minute."
)


def parse_command(text: str) -> Command | None:
    """The command a message's text is, or None for a question."""
    match = _COMMAND.match(text.strip())
    if match is None:
        return None
    name = match.group(1).lower()
    if name == "reset":
        return "reset"
    if name == "sources":
        return "sources"
    if name == "session":
        return "session"
    return "help"


@dataclass(frozen=True, slots=True)
class CommandReply:
    text: str
    # Shown to the author alone where the platform can (a refusal is nobody else's news).
    private: bool = False


class Commands:
    """Runs one command for one conversation."""

    def __init__(
        self, *, conversations: ConversationStore, reset: Callable[[str], Awaitable[bool]]
    ) -> None:
        self._conversations = conversations
        self._reset = reset

    async def run(
        self, command: Command, message: InboundMessage[Any], adapter: Adapter[Any]
    ) -> CommandReply:
        """The answer to ``command``. Never raises except ``CancelledError``."""
        try:
            if command == "reset":
                return await self._forget(message, adapter)
            if command == "sources":
                return CommandReply(await self._sources(message.conversation))
            if command == "session":
                return CommandReply(await self._session(message.conversation))
        except StoreError:
            _log.exception("command %s failed in %s", command, message.conversation)
            return CommandReply(MEMORY_DOWN, private=True)
        return CommandReply(help_text(adapter.command_prefix))

    async def _forget(self, message: InboundMessage[Any], adapter: Adapter[Any]) -> CommandReply:
        if message.author.is_admin is None:
            _log.warning(
                "reset in %s by %s refused: the platform could not say whether they are an "
                "admin (see the adapter's log line)",
                message.conversation,
                message.author.id,
            )
            return CommandReply(ADMIN_UNKNOWN, private=True)
        if not message.author.is_admin:
            return CommandReply(
                f"Sorry, only {adapter.admins} can reset a conversation. "
                "Ask one of them if this one should start over.",
                private=True,
            )
        forgotten = await self._reset(message.conversation)
        _log.info(
            "conversation %s reset by %s (%s)",
            message.conversation,
            message.author.id,
            "forgotten" if forgotten else "nothing to forget",
        )
        if forgotten:
            return CommandReply("Done: I have forgotten this conversation. Ask me anything.")
        return CommandReply("There was nothing to forget here yet.")

    async def _sources(self, conversation: str) -> str:
        sources = await self._conversations.last_sources(conversation)
        if not sources:
            return "I have not answered anything here yet, so there are no sources to show."
        lines = ["Sources of my last answer here:"]
        for s in sources:
            mark = "" if s.cited else " (consulted, not cited)"
            read = f"; as read: {s.permalink}" if s.permalink and s.permalink != s.url else ""
            lines.append(
                f"[{s.n}] {s.title} — {s.url} ({s.source}, score {s.score:.2f}{read}){mark}"
            )
        return "\n".join(lines)

    async def _session(self, conversation: str) -> str:
        info = await self._conversations.info(conversation)
        if info is None or info.turn_count == 0:
            return "I remember nothing of this conversation yet."
        count = f"{info.turn_count} question{'s' if info.turn_count != 1 else ''}"
        summary = (
            ", with a running summary of the older ones" if info.has_summary else ", all verbatim"
        )
        votes = ""
        if info.feedback_up or info.feedback_down:
            votes = (
                f" Readers rated my answers here {info.feedback_up} up and "
                f"{info.feedback_down} down."
            )
        return (
            f"I remember {count} here{summary}, since {human_time(info.created_at)} "
            f"(last active {human_time(info.updated_at)}).{votes}"
        )


def help_text(prefix: str) -> str:
    """What the bot does and which commands it knows, written with the platform's prefix."""
    return (
        "Ask me a research question and I will search Wikipedia and Hacker News and answer "
        "with numbered sources.\n"
        f"{prefix}sources lists the sources of my last answer here, with links and scores.\n"
        f"{prefix}session shows what I remember of this conversation.\n"
        f"{prefix}reset makes me forget this conversation (admins only).\n"
        f"{prefix}help shows this."
    )
