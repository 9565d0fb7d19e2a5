"""The Slack adapter (see :mod:`bot.adapters.slack.adapter`)."""

from __future__ import annotations

from bot.adapters.slack.adapter import RESET_SHORTCUT, SlackAdapter
from bot.adapters.slack.target import SlackTarget

__all__ = ["RESET_SHORTCUT", "SlackAdapter", "SlackTarget"]
