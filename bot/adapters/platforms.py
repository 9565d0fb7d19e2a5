"""Which chat-platform adapters this process runs: the ones its settings and tokens configure.

Each platform's module is imported only when that platform is configured, so a deployment
without Slack never imports slack-bolt, and the terminal never imports either SDK.
"""

from __future__ import annotations

from typing import Any

from bot.adapters.base import Adapter, MessageSink
from bot.config import Settings


def chat_adapters(settings: Settings, sink: MessageSink) -> list[Adapter[Any]]:
    """The configured chat adapters, not yet started (the runtime starts them)."""
    adapters: list[Adapter[Any]] = []
    return adapters
