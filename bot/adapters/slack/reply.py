"""One answer in one Slack thread, as :class:`SlackReply` posts it while the turn runs.

Native streaming through the SDK's ``chat_stream`` helper (``chat.startStream`` /
``appendStream`` / ``stopStream``), the progress step first as a task chunk; where the
workspace refuses it (:class:`NativeStreaming` remembers), a placeholder reply updated
with ``chat.update``. Either way updates are paced, the final message carries the answer,
the numbered Sources and the feedback buttons, and an answer longer than one message
continues in further thread replies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.models.messages.chunk import TaskUpdateChunk
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.api import (
    WarnOnce,
    api_error,
    delivery_failure,
    describe_api_error,
    post_message,
)
from bot.adapters.slack.feedback import feedback_blocks
from bot.adapters.slack.render import (
    MESSAGE_CHARS,
    escape,
    markdown_tail,
    render_mrkdwn,
    split_message,
    to_mrkdwn,
)
from bot.adapters.slack.target import SlackTarget
from bot.contract import InboundMessage, Reply

_log = logging.getLogger(__name__)

# chat.update is Tier 3 (about 50 a minute per workspace): one edit a second per reply
# leaves room for several answers at once.
UPDATE_INTERVAL_S = 1.0
# A native stream is cheaper to extend; still, a call per token would hit its limit.
STREAM_INTERVAL_S = 0.5
# chat.update refusals that a new message can work around: the old one is gone, or
# Slack no longer lets it be edited.
_REPLACEABLE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


class NativeStreaming:
    """Whether replies stream natively: yes until the workspace refuses once, then no
    until restart (every reply would be refused the same way)."""

    def __init__(self) -> None:
        self._on = True

    @property
    def on(self) -> bool:
        return self._on

    def refused(self, exc: SlackApiError) -> None:
        """The workspace refused a stream: later replies post a placeholder and edit it."""
        if self._on:
            self._on = False
            _log.warning(
                "Slack refused native streaming (%s); answering with message updates instead",
                api_error(exc) or exc,
            )


class SlackReply:
    """One answer in one thread: a native stream, or a placeholder that is edited.

    :meth:`on_reply` may be called again after it raised (the intake retries it): parts
    already posted are edited, not posted twice.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        message: InboundMessage[SlackTarget],
        *,
        reply_id: str | None,
        streaming: NativeStreaming,
        clock: Callable[[], float],
        warn: WarnOnce,
    ) -> None:
        """``reply_id`` names a reply posted before a crash, to edit; ``clock`` paces the
        updates; ``warn`` reports a refused assistant status once."""
        self._client = client
        self._message = message
        self._target = message.target
        self._id = reply_id
        self._streaming = streaming
        self._clock = clock
        self._warn = warn
        # A reply recovered after a crash edits the message it had posted: no stream.
        self._native = streaming.on and reply_id is None
        self._stream: AsyncChatStream | None = None
        self._streamed = ""  # body text the stream has accepted
        self._body = ""  # body text received so far
        self._step: tuple[str, str] | None = None  # (task id, title) of the running step
        self._steps = 0
        self._last_push = float("-inf")
        # ts of every part posted, the first is reply_id (a recovered reply's included).
        self._parts: list[str] = [reply_id] if reply_id else []
        # A recovered message may still be a native stream its crashed process never
        # stopped: it is stopped before anything else is written to it.
        self._inherited = reply_id is not None

    @property
    def reply_id(self) -> str | None:
        return self._id

    # ------------------------------------------------------------------ progress

    async def on_progress(self, step: str) -> None:
        await self._take_over()
        if self._target.assistant:
            await self._status(step)
        if self._native:
            await self._stream_step(step)
            if self._native:
                return
        await self._show(f"_{escape(step)}…_", force=self._id is None)

    async def _status(self, step: str) -> None:
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=self._target.channel,
                thread_ts=self._target.thread_ts,
                status="is researching…",
                loading_messages=[f"{step}…"],
            )
        except SlackApiError as exc:
            self._warn("assistant status", describe_api_error("assistant.threads.setStatus", exc))

    def _open_stream(self) -> AsyncChatStream:
        if self._stream is None:
            # The SDK's buffer is off (size 1): pacing is done here, by time.
            self._stream = AsyncChatStream(
                self._client,
                logger=_log,
                channel=self._target.channel,
                thread_ts=self._target.thread_ts,
                recipient_team_id=self._target.team,
                recipient_user_id=self._target.user,
                buffer_size=1,
            )
        return self._stream

    async def _stream_step(self, step: str) -> None:
        self._steps += 1
        chunks = []
        if self._step is not None:
            chunks.append(TaskUpdateChunk(id=self._step[0], title=self._step[1], status="complete"))
        self._step = (f"step{self._steps}", step)
        chunks.append(TaskUpdateChunk(id=self._step[0], title=step, status="in_progress"))
        await self._stream_call(lambda s: s.append(chunks=chunks))

    async def _stream_call(self, call: Callable[[AsyncChatStream], Awaitable[Any]]) -> bool:
        """One call on the stream; a refusal or failure switches this reply to updates."""
        stream = self._open_stream()
        first = stream.ts is None
        try:
            await call(stream)
        except SlackApiError as exc:
            if first:
                self._streaming.refused(exc)
            else:
                _log.warning("the Slack stream of %s failed; editing it instead", self._id)
            self._native = False
            return False
        if first and stream.ts:
            self._id = stream.ts
            self._parts = [stream.ts]
        return True

    # ------------------------------------------------------------------ body

    async def _take_over(self) -> None:
        """Stop the stream a crashed process left open on the message this reply recovers.

        Slack keeps a message in streaming state until ``chat.stopStream`` (or until the
        stream expires); a message that never stopped shows its last chunks, and may not
        take an edit. Stopping one that is not streaming is refused harmlessly.
        """
        if not self._inherited:
            return
        self._inherited = False
        assert self._id is not None
        try:
            await self._client.chat_stopStream(channel=self._target.channel, ts=self._id)
        except SlackApiError as exc:
            if api_error(exc) not in ("message_not_in_streaming_state", "message_not_found"):
                raise
        else:
            _log.info("stopped the stream %s a crashed process had left open", self._id)

    async def on_text(self, text: str) -> None:
        await self._take_over()
        self._body += text
        if self._native:
            pending = self._body[len(self._streamed) :]
            room = MESSAGE_CHARS - 200 - len(self._streamed)
            if not pending or room <= 0 or not self._due(STREAM_INTERVAL_S):
                return
            pending = pending[:room]
            if await self._stream_call(lambda s: s.append(markdown_text=escape(pending))):
                self._streamed += pending
            if self._native:
                return
        await self._show(self._preview(), force=False)

    def _preview(self) -> str:
        shown = to_mrkdwn(self._body)
        if len(shown) > MESSAGE_CHARS - 2:
            shown = shown[: MESSAGE_CHARS - 2]
        return f"{shown} …"

    def _due(self, interval: float) -> bool:
        now = self._clock()
        if now - self._last_push < interval:
            return False
        self._last_push = now
        return True

    async def _show(self, text: str, *, force: bool) -> None:
        """The placeholder: posted the first time, then edited at most once a second."""
        if self._id is None:
            posted = await post_message(
                self._client,
                channel=self._target.channel,
                thread_ts=self._target.thread_ts,
                text=text,
            )
            self._id = str(posted["ts"])
            self._parts = [self._id]
            self._last_push = self._clock()
            return
        if force or self._due(UPDATE_INTERVAL_S):
            await self._client.chat_update(channel=self._target.channel, ts=self._id, text=text)

    # ------------------------------------------------------------------ final

    async def on_reply(self, reply: Reply) -> None:
        """Post or edit the whole answer; a failure that may pass (429, 5xx, the network)
        raises :class:`~bot.errors.DeliveryFailed`, so it is retried later."""
        try:
            await self._finish(reply)
        except Exception as exc:
            failure = delivery_failure(exc)
            if failure is None:
                raise
            raise failure from exc

    async def _finish(self, reply: Reply) -> None:
        await self._take_over()
        event_id = self._message.event_id
        parts = split_message(render_mrkdwn(reply))
        if self._native and self._stream is not None and await self._finish_stream(reply, parts):
            return
        if self._stream is not None and self._native:
            # The stream could not take the whole answer: it becomes an edited message.
            self._native = False
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": part}}]
            if last:
                blocks += feedback_blocks(event_id)
            if i < len(self._parts) and await self._edit(i, part, blocks):
                continue
            posted = await post_message(
                self._client,
                channel=self._target.channel,
                thread_ts=self._target.thread_ts,
                text=part,
                blocks=blocks,
            )
            if i < len(self._parts):
                self._parts[i] = str(posted["ts"])
            else:
                self._parts.append(str(posted["ts"]))
            self._id = self._parts[0]

    async def _edit(self, index: int, text: str, blocks: list[dict[str, Any]]) -> bool:
        """Edit part ``index`` in place; False when it is gone or can no longer be edited.

        A part that cannot be edited (deleted, or too old to edit) is replaced by a new
        message, and the old one removed where it still exists, so a thread never shows a
        dangling half-answer beside the whole one.
        """
        ts = self._parts[index]
        try:
            await self._client.chat_update(
                channel=self._target.channel, ts=ts, text=text, blocks=blocks
            )
            return True
        except SlackApiError as exc:
            error = api_error(exc)
            if error not in _REPLACEABLE:
                raise
        _log.warning("Slack message %s cannot be edited (%s); posting it anew", ts, error)
        if error != "message_not_found":
            try:
                await self._client.chat_delete(channel=self._target.channel, ts=ts)
            except SlackApiError as exc:
                _log.warning("could not remove the old message %s: %s", ts, api_error(exc))
        return False

    async def _finish_stream(self, reply: Reply, parts: Sequence[str]) -> bool:
        """Close the native stream with the rest of the answer; False if it cannot hold it."""
        stream = self._stream
        assert stream is not None
        whole = len(parts) == 1 and reply.body.startswith(self._streamed)
        chunks = []
        if self._step is not None:
            chunks.append(TaskUpdateChunk(id=self._step[0], title=self._step[1], status="complete"))
        rest = escape(reply.body[len(self._streamed) :]) + markdown_tail(reply) if whole else ""
        blocks = feedback_blocks(self._message.event_id) if whole else None
        try:
            await stream.stop(markdown_text=rest or None, chunks=chunks or None, blocks=blocks)
        except SlackApiError:
            _log.warning("closing the Slack stream %s failed; editing it instead", self._id)
            self._native = False
            if stream.ts and not self._parts:
                self._id, self._parts = stream.ts, [stream.ts]
            return False
        if stream.ts and not self._parts:
            self._id, self._parts = stream.ts, [stream.ts]
        self._native = False
        return whole
