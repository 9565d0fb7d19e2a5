"""Where an answer goes: :class:`DiscordTarget`, and its form in the inbox for crash recovery."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import discord


@dataclass(slots=True)
class SlashState:
    """A slash command's interaction: answered through its deferred response."""

    interaction: discord.Interaction[Any]
    ephemeral: bool
    original_used: bool = False


@dataclass(frozen=True, slots=True)
class DiscordTarget:
    """Where an answer goes.

    ``channel_id`` is the channel, thread or DM the question was asked in; ``message_id``
    the question (None for a slash command); ``start_thread``: answer in a new thread
    started from the question. ``slash`` lives only in this process (an interaction
    token expires); a recovered slash question is answered in the channel instead.
    """

    channel_id: int
    guild_id: int | None
    message_id: int | None = None
    start_thread: bool = False
    thread_name: str = ""
    slash: SlashState | None = field(default=None, compare=False)


def encode_target(target: DiscordTarget) -> Mapping[str, Any]:
    """``target`` as JSON-able data (ids as strings; the slash state stays behind)."""
    return {
        "channel_id": str(target.channel_id),
        "guild_id": None if target.guild_id is None else str(target.guild_id),
        "message_id": None if target.message_id is None else str(target.message_id),
        "start_thread": target.start_thread,
        "thread_name": target.thread_name,
    }


def decode_target(data: Mapping[str, Any]) -> DiscordTarget:
    """The target back from :func:`encode_target`'s data.

    Raises:
        ValueError: the data is not a Discord target.
    """
    try:
        guild, message = data["guild_id"], data["message_id"]
        return DiscordTarget(
            int(data["channel_id"]),
            None if guild is None else int(guild),
            None if message is None else int(message),
            start_thread=bool(data.get("start_thread", False)),
            thread_name=str(data.get("thread_name", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a Discord target: {data!r}") from exc
