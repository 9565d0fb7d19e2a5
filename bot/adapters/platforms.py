"""Which chat-platform adapters this process runs: the ones its settings and tokens configure.

Each platform's module is imported only when that platform is configured, so a deployment
without Slack never imports slack-bolt, and the terminal never imports either SDK.
"""

from __future__ import annotations

from typing import Any

from bot.adapters.base import Adapter
from bot.config import Settings


def chat_adapters(settings: Settings) -> list[Adapter[Any]]:
    """The configured chat adapters, not yet started (the runtime starts them).

    Raises:
        ConfigError: a platform is half configured (Slack's Socket Mode without
            ``SLACK_APP_TOKEN``, HTTP mode without ``SLACK_SIGNING_SECRET``).
    """
    adapters: list[Adapter[Any]] = []
    if settings.discord_token is not None and settings.discord.enabled:
        from bot.adapters.discord import DiscordAdapter  # noqa: PLC0415 - only when configured

        adapters.append(
            DiscordAdapter(
                settings.discord,
                settings.discord_token,
                inbox_max_age_s=settings.intake.inbox_max_age_s,
            )
        )
    if settings.slack.enabled and settings.slack_bot_token is not None:
        from bot.adapters.slack import SlackAdapter  # noqa: PLC0415 - only when configured

        adapters.append(SlackAdapter.from_settings(settings))
    return adapters
