"""Who the bot is in its workspace, and whether its token has the scopes the settings need."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.slack.api import describe_api_error
from bot.config import SlackSettings
from bot.errors import PlatformSetupError

_log = logging.getLogger(__name__)

# Every mode needs these; the others are checked where they are used.
CORE_SCOPES = ("app_mentions:read", "chat:write")
DM_SCOPES = ("im:history",)
THREAD_SCOPES = ("channels:history",)


@dataclass(frozen=True, slots=True)
class Identity:
    """The bot as Slack knows it (``auth.test``); empty until the adapter has checked."""

    user_id: str = ""  # the bot user, as ``<@U...>`` mentions name it
    bot_id: str = ""  # set on the messages the bot posts
    team_id: str = ""  # the workspace, where an event does not name one


async def check_identity(client: AsyncWebClient, settings: SlackSettings) -> Identity:
    """The bot's identity, once Slack accepted its token and the scopes ``settings`` need.

    Scopes are checked only when Slack lists them (the ``x-oauth-scopes`` header);
    otherwise a missing one shows where it is used.

    Raises:
        PlatformSetupError: a rejected token, an uninstalled app, Slack out of reach, or a
            missing scope; one line naming the fix.
    """
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        raise PlatformSetupError(describe_api_error("auth.test", exc)) from exc
    except (SlackClientError, aiohttp.ClientError, OSError) as exc:
        raise PlatformSetupError(
            f"cannot reach Slack at {settings.api_url} ({exc}); check the network "
            "or [slack].api_url"
        ) from exc
    identity = Identity(
        user_id=str(auth.get("user_id", "")),
        bot_id=str(auth.get("bot_id", "")),
        team_id=str(auth.get("team_id", "")),
    )
    granted = auth.headers.get("x-oauth-scopes") or auth.headers.get("X-OAuth-Scopes")
    if granted is None:
        _log.debug("Slack sent no x-oauth-scopes header; scopes are checked on use")
        return identity
    have = {s.strip() for s in str(granted).split(",")}
    wanted = list(CORE_SCOPES)
    if settings.respond_to_dms:
        wanted += DM_SCOPES
    if settings.follow_up_in_threads:
        wanted += THREAD_SCOPES
    missing = [scope for scope in wanted if scope not in have]
    if missing:
        raise PlatformSetupError(
            f"the Slack app lacks the {', '.join(missing)} scope"
            f"{'s' if len(missing) > 1 else ''}: add "
            f"{'them' if len(missing) > 1 else 'it'} under OAuth & Permissions (or create "
            "the app from slack-manifest.yaml) and reinstall the app"
        )
    return identity
