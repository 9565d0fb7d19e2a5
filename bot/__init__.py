"""research-agent: a research assistant for Discord, Slack and the terminal."""

from __future__ import annotations

__version__ = "0.2.0"
