"""Who counts as an admin, and where the bot may not post: missing permissions, logged once."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import discord

_log = logging.getLogger(__name__)


class Access:
    """Admin checks, and the bookkeeping of permissions Discord has refused the bot.

    A channel where a post was refused (403) is skipped until roles or overwrites change;
    each missing permission is logged once per channel, not once per question.
    """

    def __init__(self, *, admin_role_ids: Iterable[int], admin_user_ids: Iterable[int]) -> None:
        self._admin_roles = frozenset(admin_role_ids)
        self._admin_users = frozenset(admin_user_ids)
        self._warned: set[tuple[int, str]] = set()
        # Channels where Discord refused a post: skipped until permissions change.
        self._refused: set[int] = set()

    def is_admin(self, user: discord.abc.User, permissions: discord.Permissions | None) -> bool:
        """An admin user or role, or Manage Server (``permissions``: an interaction's, if any)."""
        if user.id in self._admin_users:
            return True
        if not isinstance(user, discord.Member):
            return False
        if any(role.id in self._admin_roles for role in user.roles):
            return True
        granted = permissions if permissions is not None else user.guild_permissions
        return granted.manage_guild or granted.administrator

    def can_answer(self, channel: Any, start_thread: bool) -> bool:
        """Whether the bot may post here; a missing permission is logged once per channel."""
        if channel.id in self._refused:
            return False
        guild = getattr(channel, "guild", None)
        if guild is None or not hasattr(channel, "permissions_for"):
            return True
        granted = channel.permissions_for(guild.me)
        in_thread = isinstance(channel, discord.Thread)
        needed = ["view_channel", "read_message_history"]
        needed.append("send_messages_in_threads" if in_thread else "send_messages")
        if start_thread:
            needed.append("create_public_threads")
        missing = [name for name in needed if not getattr(granted, name)]
        for name in missing:
            self._warn_missing(channel.id, name)
        # Without the thread permission the answer goes in the channel instead.
        return not [name for name in missing if name != "create_public_threads"]

    def missing_permission(self, channel_id: int, action: str, exc: discord.HTTPException) -> None:
        """Discord refused a post or edit (403): logged once per channel, not retried."""
        if action == "send":
            self._refused.add(channel_id)
        self._warn_missing(channel_id, f"{action} ({exc.text or exc.status})")

    def permissions_changed(self) -> None:
        """Roles or overwrites changed: channels refused before may work now."""
        self._refused.clear()
        self._warned.clear()

    def _warn_missing(self, channel_id: int, permission: str) -> None:
        if (channel_id, permission) in self._warned:
            return
        self._warned.add((channel_id, permission))
        _log.warning(
            "Discord: missing permission %s in channel %s; questions there are not answered "
            "(or not threaded) until it is granted",
            permission,
            channel_id,
        )
