"""Slack's Web API as the adapter calls it: the client, shared posting calls, errors."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.core.metrics import PLATFORM_429
from bot.errors import DeliveryFailed

_log = logging.getLogger(__name__)

# Errors that mean the token no longer belongs to an installed app.
_UNINSTALLED = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}
)


def web_client(
    token: str, *, base_url: str, session: aiohttp.ClientSession, retrying: bool
) -> AsyncWebClient:
    """A client for ``base_url`` on ``session``.

    ``retrying`` adds the SDK's retry handlers: a dropped connection and a 5xx are tried
    again, and a 429 waits for its ``Retry-After``. The start-up check goes without them,
    so that a network problem is reported at once.
    """
    if not retrying:
        return AsyncWebClient(token=token, base_url=base_url, session=session)
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        session=session,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            _CountingRateLimitHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


class _CountingRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """The SDK's 429 handler, counting every 429 Slack sends (retried or not)."""

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None and response.status_code == 429:
            PLATFORM_429.labels("slack").inc()
        return await super().can_retry_async(
            state=state, request=request, response=response, error=error
        )


async def post_message(
    client: AsyncWebClient,
    *,
    channel: str,
    thread_ts: str,
    text: str,
    blocks: list[dict[str, Any]] | None = None,
) -> AsyncSlackResponse:
    """Post ``text`` (already mrkdwn, escaped) in a thread, with unfurls off.

    Unfurls stay off: an answer links its Sources, and a preview card for each would
    bury the answer (and show a page nobody asked to see).
    """
    return await client.chat_postMessage(
        channel=channel,
        thread_ts=thread_ts,
        text=text,
        blocks=blocks,  # None is left out of the request by the SDK
        unfurl_links=False,
        unfurl_media=False,
    )


async def post_ephemeral(
    client: AsyncWebClient, *, channel: str, user: str, thread_ts: str | None, text: str
) -> None:
    """Post ``text`` (already escaped) that ``user`` alone sees; in the channel when no
    ``thread_ts``."""
    kwargs: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
    await client.chat_postEphemeral(channel=channel, user=user, text=text, **kwargs)


def api_error(exc: SlackApiError) -> str:
    """Slack's error code for a refused call (``missing_scope``), or ``""``."""
    data = getattr(exc.response, "data", None)
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _needed_scope(exc: SlackApiError) -> str:
    data = getattr(exc.response, "data", None)
    return str(data.get("needed", "")) if isinstance(data, dict) else ""


def describe_api_error(method: str, exc: SlackApiError) -> str:
    """One operator line for a failed call: the missing scope, or the fix, when known."""
    error = api_error(exc)
    if error == "missing_scope":
        needed = _needed_scope(exc) or "a scope it needs"
        return (
            f"Slack refused {method}: the app lacks the {needed} scope; add it under OAuth & "
            "Permissions (or from slack-manifest.yaml) and reinstall the app"
        )
    if error in _UNINSTALLED:
        return (
            f"Slack refused {method} ({error}): the app is not installed in this workspace "
            "any more, or SLACK_BOT_TOKEN is stale; reinstall it and copy the new token"
        )
    return f"Slack refused {method}: {error or exc}"


class WarnOnce:
    """Logs an operator line as an error the first time its key comes up, then at debug.

    For calls that fail the same way on every use (a scope the app lacks): one error
    names the fix, and the log is not flooded with it.
    """

    def __init__(self, logger: logging.Logger = _log) -> None:
        self._logger = logger
        self._warned: set[str] = set()

    def __call__(self, key: str, line: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._logger.error("%s", line)
        else:
            self._logger.debug("%s", line)


# Refusals that pass: Slack is busy or failing, not saying no.
_TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def delivery_failure(exc: Exception) -> DeliveryFailed | None:
    """A failed call as :class:`~bot.errors.DeliveryFailed` when retrying later can help
    (a 429 with its ``Retry-After``, a 5xx, a lost connection); None when it cannot."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = int(getattr(response, "status_code", 200) or 200)
        if status != 429 and status < 500 and api_error(exc) not in _TRANSIENT:
            return None
        headers = getattr(response, "headers", None) or {}
        retry_after = headers.get("Retry-After") or headers.get("retry-after")
        try:
            wait = float(retry_after) if retry_after is not None else None
        except (TypeError, ValueError):
            wait = None
        return DeliveryFailed(f"Slack answered {status} ({api_error(exc)})", retry_after_s=wait)
    if isinstance(exc, SlackClientError | aiohttp.ClientError | OSError | TimeoutError):
        return DeliveryFailed(f"Slack could not be reached: {exc!r}")
    return None
