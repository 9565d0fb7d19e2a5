"""Where a Slack answer goes: :class:`SlackTarget`, and its round trip through the inbox."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The thread part of the key of a slash command that names no thread (only help).
COMMAND_THREAD = "commands"


@dataclass(frozen=True, slots=True)
class SlackTarget:
    """Where an answer goes: a thread, and who asked (for ephemeral lines and streams)."""

    team: str
    channel: str
    thread_ts: str
    user: str
    # An assistant side-panel thread: its status line shows the turn's progress.
    assistant: bool = False
    # Every line goes to the asker alone (a slash command's answers, as Slack users expect).
    private: bool = False

    @property
    def thread(self) -> str | None:
        """The thread to post in; None for a slash command that names no thread."""
        return None if self.thread_ts == COMMAND_THREAD else self.thread_ts

    def encode(self) -> Mapping[str, Any]:
        """The target as JSON-able data, kept in the inbox for crash recovery."""
        return dataclasses.asdict(self)

    @classmethod
    def decode(cls, data: Mapping[str, Any]) -> SlackTarget:
        """The target back from :meth:`encode`'s data.

        Raises:
            ValueError: the data is not a Slack target.
        """
        try:
            return cls(
                team=str(data["team"]),
                channel=str(data["channel"]),
                thread_ts=str(data["thread_ts"]),
                user=str(data["user"]),
                assistant=bool(data.get("assistant", False)),
                private=bool(data.get("private", False)),
            )
        except KeyError as exc:
            raise ValueError(f"not a Slack target: {data!r}") from exc
