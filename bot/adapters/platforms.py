"""Which chat-platform adapters this process runs: the ones its settings and tokens configure.

Each platform's module is imported only when that platform is configured, so a deployment
without Slack never imports slack-bolt, and the terminal never imports either SDK.
"""

from __future__ import annotations

from typing import Any

from bot.adapters.base import Adapter, AnsweredCheck, MessageSink
from bot.config import Settings


def chat_adapters(
    settings: Settings, sink: MessageSink, *, answered: AnsweredCheck | None = None
) -> list[Adapter[Any]]:
    """The configured chat adapters, not yet started (the runtime starts them).

    ``answered`` is the intake's ``has_answered``: Discord asks it whether a thread is one
    the bot answered in (its follow-ups need no mention).
    """
    adapters: list[Adapter[Any]] = []
    if settings.discord_token is not None and settings.discord.enabled:
        from bot.adapters.discord import DiscordAdapter  # noqa: PLC0415 - only when configured

        adapters.append(
            DiscordAdapter(
                settings.discord,
                settings.discord_token,
                sink,
                answered=answered,
                inbox_max_age_s=settings.intake.inbox_max_age_s,
            )
        )
    return adapters
