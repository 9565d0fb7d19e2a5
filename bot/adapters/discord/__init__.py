"""The Discord adapter (see :mod:`bot.adapters.discord.adapter`)."""

from __future__ import annotations

from bot.adapters.discord.adapter import DiscordAdapter
from bot.adapters.discord.target import DiscordTarget

__all__ = ["DiscordAdapter", "DiscordTarget"]
