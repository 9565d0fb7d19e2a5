"""Slack's feedback buttons: drawn under every final answer, and each click stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bot.adapters.base import IntakePort
from bot.adapters.slack.handoff import Handoff
from bot.contract import Rating

FEEDBACK_ACTION = "answer_feedback"


def feedback_blocks(event_id: str) -> list[dict[str, Any]]:
    """The buttons under the answer to ``event_id``; a click carries ``up:`` or ``down:``
    and the event id, which is all storing it needs."""

    def button(text: str, value: str) -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": text}, "value": value}

    return [
        {
            "type": "context_actions",
            "elements": [
                {
                    "type": "feedback_buttons",
                    "action_id": FEEDBACK_ACTION,
                    "positive_button": button("Good answer", f"up:{event_id}"),
                    "negative_button": button("Bad answer", f"down:{event_id}"),
                }
            ],
        }
    ]


class FeedbackButtons:
    """The listener for clicks on :func:`feedback_blocks`: acked, then stored by the intake."""

    def __init__(self, *, intake: IntakePort, handoff: Handoff) -> None:
        self._intake = intake
        self._handoff = handoff

    async def on_click(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any]) -> None:
        await ack()
        self._handoff.spawn(self._store(body), "feedback")

    async def _store(self, body: Mapping[str, Any]) -> None:
        user = str(body.get("user", {}).get("id", ""))
        for action in body.get("actions", []):
            rating, _, event_id = str(action.get("value", "")).partition(":")
            if action.get("action_id") != FEEDBACK_ACTION or rating not in ("up", "down"):
                continue
            verdict: Rating = "up" if rating == "up" else "down"
            await self._intake.feedback("slack", event_id, user, verdict)
