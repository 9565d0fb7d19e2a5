"""Which chat-platform adapters this process runs: the ones its settings and tokens configure.

Each platform's module is imported only when that platform is configured, so a deployment
without Slack never imports slack-bolt, and the terminal never imports either SDK.
"""

from __future__ import annotations

from typing import Any

from bot.adapters.base import Adapter, FeedbackSink, MessageSink
from bot.config import Settings


def chat_adapters(
    settings: Settings, sink: MessageSink, *, feedback: FeedbackSink | None = None
) -> list[Adapter[Any]]:
    """The configured chat adapters, not yet started (the runtime starts them).

    ``feedback`` stores readers' votes (the intake's ``feedback``); without it, platforms
    that offer feedback buttons do not show them.

    Raises:
        ConfigError: a platform is half configured (Slack's Socket Mode without
            ``SLACK_APP_TOKEN``, HTTP mode without ``SLACK_SIGNING_SECRET``).
    """
    adapters: list[Adapter[Any]] = []
    if settings.slack.enabled and settings.slack_bot_token is not None:
        from bot.adapters.slack import SlackAdapter  # noqa: PLC0415 - only when configured

        adapters.append(SlackAdapter.from_settings(settings, sink, feedback=feedback))
    return adapters
