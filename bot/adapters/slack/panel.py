"""Slack's AI panel: the suggested prompts a member sees on opening a conversation with the bot.

Slack has two surfaces for it, and a workspace has one or the other:

* the **agent view** (manifest ``features.agent_view``, Slack's current one): opening the
  app's Messages tab sends ``app_home_opened`` with ``tab: "messages"``, and the prompts
  are set for the whole conversation, with no thread (each message typed there starts a
  thread of its own);
* the **assistant view** (``features.assistant_view``, which Slack is retiring): opening
  the panel starts an assistant thread, ``assistant_thread_started``, and the prompts are
  set for that thread.

Slack answers ``not_agent_app`` to the threadless call from an app still on the assistant
view: such an app gets its prompts from ``assistant_thread_started`` instead, so that
refusal is expected and only logged at debug level.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.api import WarnOnce, api_error, describe_api_error
from bot.adapters.slack.handoff import Handoff

_log = logging.getLogger(__name__)

SUGGESTED_PROMPTS = (
    ("What is it?", "What is the transformer architecture in deep learning?"),
    ("Compare", "How do GPT and BERT differ?"),
    ("Latest", "What is new in Rust on Hacker News?"),
)
TITLE = "Ask me a research question"
# Slack's answer to a threadless setSuggestedPrompts from an app on the assistant view.
NOT_AGENT_APP = "not_agent_app"


class Panel:
    """The listeners of both panel surfaces; each spawns its one Web API call."""

    def __init__(self, *, client: AsyncWebClient, handoff: Handoff, warn: WarnOnce) -> None:
        """``warn`` reports a refused call (a missing scope) once."""
        self._client = client
        self._handoff = handoff
        self._warn = warn

    async def on_home_opened(self, event: dict[str, Any]) -> None:
        """The agent view: the member opened the Messages tab (the Home tab is off)."""
        channel = str(event.get("channel", ""))
        if event.get("tab") != "messages" or not channel:
            return
        self._handoff.spawn(self._suggest(channel, None), "messages tab opened")

    async def on_assistant_thread_started(self, event: dict[str, Any]) -> None:
        """The assistant view: the member opened the panel, which started a thread."""
        thread = event.get("assistant_thread", {})
        self._handoff.spawn(
            self._suggest(str(thread.get("channel_id", "")), str(thread.get("thread_ts", ""))),
            "assistant thread start",
        )

    async def _suggest(self, channel: str, thread_ts: str | None) -> None:
        try:
            await self._client.assistant_threads_setSuggestedPrompts(
                channel_id=channel,
                thread_ts=thread_ts,
                title=TITLE,
                prompts=[{"title": title, "message": text} for title, text in SUGGESTED_PROMPTS],
            )
        except SlackApiError as exc:
            if thread_ts is None and api_error(exc) == NOT_AGENT_APP:
                _log.debug("Slack: no prompts on the Messages tab of an assistant-view app")
                return
            self._warn(
                "suggested prompts",
                describe_api_error("assistant.threads.setSuggestedPrompts", exc),
            )
