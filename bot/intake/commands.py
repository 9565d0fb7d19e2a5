"""The commands every platform shares: ``reset``, ``sources``, ``session``, ``help``.

A command is a message whose whole text is one command word, with or without the
platform's prefix (``/reset``, ``reset``, ``@bot reset`` once the adapter has removed the
mention). Commands are answered by the intake and never reach the pipeline. ``reset`` is
for admins; the adapter says who is one (``Author.is_admin``) and how to name them.

A message that looks like a command but is none of these is answered too, with the list
of commands, instead of being researched: ``/foo``, ``/foo and more``, ``/reset now``
(a command takes nothing after it), and on Slack ``/research foo``. "Looks like a
command" is a slash, then one word of letters (``-`` or ``_`` may join letters), then
nothing or a space: ``/usr/bin is what?`` and ``/2024 in review`` stay questions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
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
# A slash and one word of letters, then the end or a space (what follows is its arguments).
_SLASH_WORD = re.compile(r"^/([a-z]+(?:[-_][a-z]+)*)[.!?]?(?:\s+(.*))?$", re.IGNORECASE | re.DOTALL)

MEMORY_DOWN = "I could not reach my conversation memory just now; please try again."
ADMIN_UNKNOWN = (
    "I could not check just now whether you may reset this conversation; please try again "
    "in a minute."
)


@dataclass(frozen=True, slots=True)
class NotACommand:
    """A message written like a command that is none: ``typed`` is the command as written
    (``/foo``, ``/research foo``), ``arguments`` what followed it."""

    typed: str
    arguments: str = ""

    @property
    def known(self) -> bool:
        """Whether ``typed`` names a command (which was given arguments it does not take)."""
        return _known(self.typed.rsplit(maxsplit=1)[-1]) is not None


def parse_command(text: str, prefix: str = "/") -> Command | NotACommand | None:
    """The command a message's text is; :class:`NotACommand` for one written like a
    command that is none; None for a question.

    ``prefix`` is the adapter's :attr:`~bot.adapters.base.Adapter.command_prefix`: a
    message that starts with a longer one than ``/`` (Slack's ``/research ``) is a command
    whatever word follows it.
    """
    text = text.strip()
    command = _known(text)
    if command is not None:
        return command
    head = prefix.strip()
    if len(head) > 1 and (
        text.lower() == head.lower() or text.lower().startswith(f"{head} ".lower())
    ):
        word, *rest = text[len(head) :].split(maxsplit=1) or ["help"]
        arguments = rest[0].strip() if rest else ""
        command = _known(word)
        if command is not None and not arguments:
            return command
        return NotACommand(f"{head} {word}", arguments)
    match = _SLASH_WORD.match(text)
    if match is None:
        return None
    return NotACommand(f"/{match.group(1)}", (match.group(2) or "").strip())


def _known(word: str) -> Command | None:
    match = _COMMAND.match(word.strip())
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
        return CommandReply(help_text(adapter.command_prefix, adapter.own_commands))

    @staticmethod
    def not_a_command(written: NotACommand, adapter: Adapter[Any]) -> CommandReply:
        """What to say to a message written like a command that is none: which commands
        there are. It is the writer's business alone, like a refusal."""
        if written.known:
            opening = f"{written.typed} takes nothing after it; send it on its own."
        else:
            opening = f"{written.typed} is not a command I know."
        return CommandReply(
            f"{opening} My commands are:\n"
            f"{command_list(adapter.command_prefix, adapter.own_commands)}\n"
            "Anything else you write to me is a question I research.",
            private=True,
        )

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


def help_text(prefix: str, own: Sequence[str] = ()) -> str:
    """What the bot does and which commands it knows, written with the platform's prefix."""
    return (
        "Ask me a research question and I will search Wikipedia and Hacker News and answer "
        f"with numbered sources.\n{command_list(prefix, own)}"
    )


def command_list(prefix: str, own: Sequence[str] = ()) -> str:
    """One line per command, written with the platform's prefix; then ``own``, the help
    lines of the commands the adapter answers itself."""
    return "\n".join(
        [
            f"{prefix}sources lists the sources of my last answer here, with links and scores.",
            f"{prefix}session shows what I remember of this conversation.",
            f"{prefix}reset makes me forget this conversation (admins only).",
            f"{prefix}help shows what I do and these commands.",
            *own,
        ]
    )
