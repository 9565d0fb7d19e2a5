"""The work after Slack's ack: each payload handled in a tracked task, where its errors stop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.adapters.slack.api import describe_api_error
from bot.core.tasks import TaskTracker

_log = logging.getLogger(__name__)


class Handoff:
    """Runs what a listener received after the listener returned (and Bolt acked).

    The app runs with ``process_before_response=True``: Bolt acks when a listener returns,
    so a listener only translates the payload and spawns the rest here. The tasks are in
    the adapter's :class:`~bot.core.tasks.TaskTracker` (Bolt's default would run listeners
    in tasks nobody owns), which the adapter drains when it closes.
    """

    def __init__(self, tasks: TaskTracker) -> None:
        self._tasks = tasks

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in the background; ``name`` says what arrived, for the log."""
        try:
            self._tasks.spawn(self._guarded(work, name), name=f"slack:{name}")
        except RuntimeError:
            _log.info("Slack %s arrived while shutting down; not taken", name)

    async def _guarded(self, work: Awaitable[None], name: str) -> None:
        # The one error boundary per inbound payload, after the ack.
        try:
            await work
        except SlackApiError as exc:
            _log.error("Slack %s: %s", name, describe_api_error("a call", exc))
        except Exception:
            _log.exception("handling the Slack %s failed", name)
