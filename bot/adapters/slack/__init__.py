"""The Slack adapter: slack-bolt's ``AsyncApp`` translated onto the shared intake.

The path of an event through the package (each name a module of it):

    Slack ──(Socket Mode websocket | signed HTTP POST)──► app: AsyncApp, one listener a kind
        │ inbound: a mention, a message (DM, follow-up, the AI panel's)
        │ panel: the AI panel opened (agent or assistant view): suggested prompts
        │ commands: /research, the reset shortcut       feedback: a button click
        │ the listener decides what arrived; handoff spawns the rest in a tracked task;
        │ the listener returns: Bolt acks
        ▼
    inbound / commands: an InboundMessage[SlackTarget] (admins: may the author reset?)
        ▼                                               (feedback: intake.feedback)
    intake.submit ──► commands / rate limit / inbox / queue / turn
        ▼
    adapter.open_reply ──► reply: SlackReply streams into the thread (render: mrkdwn, in
                           parts); the final message carries feedback's buttons
    adapter.notify ──► api: a short line, in the thread or to the asker alone

Beside the path: ``adapter`` is the lifecycle (check, start, close) and the
:class:`~bot.adapters.base.Adapter` face, and builds the others at start; ``identity``
checks the token and its scopes; ``api`` is the web client, posting with unfurls off, and
:func:`~bot.adapters.slack.api.describe_api_error`; ``target`` is
:class:`~bot.adapters.slack.target.SlackTarget`, where an answer goes.

Ack at once: Bolt acks when a listener returns, and a listener only decides what arrived
and spawns the rest, so nothing that waits on the network happens before the ack.

Exactly once: the inbox dedupes on the message, ``"{channel}:{ts}"``, rather than on the
``event_id`` of the envelope. A retry (``X-Slack-Retry-Num``, ``retry_attempt``) carries
the same message, and so does the ``message`` event Slack sends next to an ``app_mention``
for the same text, so neither is answered twice, while a retry whose first copy never
arrived is the first claim and is answered. Nothing is dropped for carrying a retry header.
The client has the SDK's ``AsyncRateLimitErrorRetryHandler``, so a 429 waits for
``Retry-After``.

Errors: start-up raises :class:`~bot.errors.PlatformSetupError` with one line naming the
fix (a revoked token, an uninstalled app, a missing scope); a listener never lets an
exception reach Bolt (logged, and the user sees nothing or a fixed line).
"""

from __future__ import annotations

from bot.adapters.slack.adapter import SlackAdapter
from bot.adapters.slack.api import describe_api_error
from bot.adapters.slack.commands import RESET_SHORTCUT
from bot.adapters.slack.reply import SlackReply
from bot.adapters.slack.target import SlackTarget

__all__ = ["RESET_SHORTCUT", "SlackAdapter", "SlackReply", "SlackTarget", "describe_api_error"]
