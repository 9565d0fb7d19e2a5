"""Who may reset a conversation on Slack: configured ids, and workspace admins and owners."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.api import WarnOnce, describe_api_error

_log = logging.getLogger(__name__)

# An admin demoted in Slack keeps the right this long at most; a cache saves a users.info
# call per message.
ADMIN_CACHE_S = 300.0


class Admins:
    """Answers "may this user reset?", asking ``users.info`` at most once per cache period."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        configured: Collection[str],
        clock: Callable[[], float],
        warn: WarnOnce,
    ) -> None:
        """``configured`` ids are admins without asking Slack; ``warn`` reports a refused
        ``users.info`` (a missing scope) once."""
        self._client = client
        self._configured = configured
        self._clock = clock
        self._warn = warn
        self._cache: dict[str, tuple[bool, float]] = {}  # user: (verdict, expiry)

    async def is_admin(self, user: str) -> bool | None:
        """Whether ``user`` may reset: a configured id, or a workspace admin or owner.

        ``users.info`` answers are cached for :data:`ADMIN_CACHE_S`. When Slack refuses
        the call (a missing scope) the user is not an admin: the refusal is polite, and the
        log says why. When Slack cannot be asked just now (the connection failed), the
        answer is None, "unknown": an ordinary question does not depend on it, and a reset
        is refused with "try again".
        """
        if not user:
            return False
        if user in self._configured:
            return True
        cached = self._cache.get(user)
        now = self._clock()
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            info = await self._client.users_info(user=user)
        except SlackApiError as exc:
            self._warn("users.info", describe_api_error("users.info", exc))
            return False
        except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            _log.warning("could not ask Slack whether %s is an admin: %r", user, exc)
            return None
        profile = info.get("user") or {}
        verdict = bool(
            profile.get("is_admin") or profile.get("is_owner") or profile.get("is_primary_owner")
        )
        self._cache[user] = (verdict, now + ADMIN_CACHE_S)
        return verdict
