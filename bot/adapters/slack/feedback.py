"""Slack's feedback buttons: drawn under every final answer, and each click stored."""

from __future__ import annotations

from typing import Any

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
