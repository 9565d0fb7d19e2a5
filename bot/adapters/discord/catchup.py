"""After a (re)connect, the questions asked while the bot was away: read back from history.

The history of research channels, and of the threads the bot answered in, is read back to
the inbox's maximum age, and each message is handed in once more: the inbox drops those
already taken. Each shard catches up its own guilds, on its own client, when it is ready.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import discord

from bot.adapters.discord.inbound import Answered, thread_key
from bot.adapters.discord.pacing import SendBudget, note_429
from bot.config import DiscordSettings

_log = logging.getLogger(__name__)

# How far back the catch-up reads one channel at most.
CATCH_UP_MESSAGES = 500


class CatchUp:
    """Reads back what was said while the bot was away and hands it to ``consider``."""

    def __init__(
        self,
        settings: DiscordSettings,
        *,
        max_age_s: float,
        budget: SendBudget,
        answered: Answered,
        consider: Callable[[discord.Message], Awaitable[None]],
    ) -> None:
        self._settings = settings
        self._research = frozenset(settings.research_channels)
        self._max_age_s = max_age_s
        self._budget = budget
        self._answered = answered
        self._consider = consider

    async def run(self, client: discord.Client) -> None:
        """Questions asked while the bot was away, in the guilds ``client`` (a shard) sees,
        from channel history, each handed in once."""
        if not self._max_age_s:
            return
        since = datetime.now(UTC) - timedelta(seconds=self._max_age_s)
        places: list[discord.TextChannel | discord.Thread] = []
        for channel_id in self._research:
            channel = client.get_channel(channel_id)
            if isinstance(channel, discord.TextChannel):
                places.append(channel)
        for guild in client.guilds:
            for thread in guild.threads:
                key = thread_key(thread)
                if thread.parent_id in self._research or (
                    self._settings.follow_up_in_threads and await self._answered.has_answered(key)
                ):
                    places.append(thread)
        handed = 0
        for place in places:
            if client.is_closed():
                return  # the shard stopped (given to another replica, or shutdown)
            try:
                handed += await self._read_back(client, place, since)
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                note_429(exc)
                _log.warning("Discord: could not read the history of %s: %s", place.id, exc)
        if handed:
            _log.info("Discord: handed in %d message(s) from history after (re)connecting", handed)

    async def _read_back(
        self, client: discord.Client, place: discord.TextChannel | discord.Thread, since: datetime
    ) -> int:
        me = client.user.id if client.user is not None else None
        # One page per channel, paced like everything else (a restart reads many at once).
        await self._budget.acquire_global()
        messages = [
            m async for m in place.history(limit=CATCH_UP_MESSAGES, after=since, oldest_first=True)
        ]
        # Answered before the inbox knew them (a command's reply, say): leave them be.
        replied = {
            m.reference.message_id
            for m in messages
            if m.author.id == me and m.reference is not None
        }
        handed = 0
        for message in messages:
            if message.author.id == me or message.id in replied:
                continue
            await self._consider(message)
            handed += 1
        return handed
