"""The slash commands /ask /reset /sources /session /help: registered, synced, handed in.

A command is an inbound message like any other (``/reset`` as its text, ``/ask``'s question
as is): the intake answers it, through the interaction's deferred response.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import discord
from discord import app_commands

from bot.adapters.discord.inbound import PLATFORM, Submit, channel_key, parent_of
from bot.adapters.discord.permissions import Access
from bot.adapters.discord.target import DiscordTarget, SlashState
from bot.config import DiscordSettings
from bot.contract import Author, InboundMessage

_log = logging.getLogger(__name__)

CLOSED_LINE = "I am restarting; please ask again in a minute."


class SlashCommands:
    """The bot's application commands, each deferred at once and submitted to the intake."""

    def __init__(self, settings: DiscordSettings, *, access: Access, submit: Submit) -> None:
        self._settings = settings
        self._access = access
        self._submit = submit

    def register(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        """Register /ask /reset /sources /session /help (every client's ``setup_hook``)."""

        async def ask(interaction: discord.Interaction[Any], question: str) -> None:
            await self._run(interaction, "ask", question)

        tree.add_command(
            app_commands.Command(
                name="ask",
                description="Research a question and answer with numbered sources",
                callback=app_commands.describe(question="What do you want to know?")(ask),
            )
        )
        for name, description in (
            ("reset", "Forget this conversation (Manage Server or an admin role)"),
            ("sources", "List the sources of my last answer here"),
            ("session", "Show what I remember of this conversation"),
            ("help", "What I do and how to ask"),
        ):
            command: app_commands.Command[Any, ..., None] = app_commands.Command(
                name=name, description=description, callback=self._command(name)
            )
            if name == "reset":
                # Only a hint to Discord's UI; the check that counts is Access.is_admin.
                command.default_permissions = discord.Permissions(manage_guild=True)
            tree.add_command(command)

    async def sync(self, tree: app_commands.CommandTree[discord.Client]) -> None:
        """Send the registered commands to Discord (once, by the replica running shard 0);
        a refusal is logged with its likely fix."""
        try:
            if self._settings.command_guild_ids:
                for guild_id in self._settings.command_guild_ids:
                    guild = discord.Object(guild_id)
                    tree.copy_global_to(guild=guild)
                    await tree.sync(guild=guild)
            else:
                await tree.sync()
        except discord.HTTPException as exc:
            _log.warning(
                "Discord: could not sync the slash commands (%s); invite the bot with the "
                "applications.commands scope, or check [discord].command_guild_ids",
                exc,
            )

    def _command(
        self, name: str
    ) -> Callable[[discord.Interaction[Any]], Coroutine[Any, Any, None]]:
        async def run(interaction: discord.Interaction[Any]) -> None:
            await self._run(interaction, name, "")

        return run

    async def _run(self, interaction: discord.Interaction[Any], name: str, question: str) -> None:
        """A slash command: deferred at once (Discord wants an answer within 3 s)."""
        is_admin = self._access.is_admin(interaction.user, interaction.permissions)
        ephemeral = name == "reset" and not is_admin
        try:
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        except discord.HTTPException:
            _log.warning(
                "Discord: could not acknowledge /%s %s", name, interaction.id, exc_info=True
            )
            return
        channel = interaction.channel
        channel_id = interaction.channel_id or 0
        state = SlashState(interaction, ephemeral)
        message = InboundMessage(
            text=question if name == "ask" else f"/{name}",
            author=Author(
                str(interaction.user.id),
                interaction.user.display_name,
                is_bot=interaction.user.bot,
                is_admin=is_admin,
            ),
            conversation=channel_key(interaction.guild_id, channel_id, parent_of(channel)),
            platform=PLATFORM,
            event_id=str(interaction.id),
            sent_at=interaction.created_at,
            target=DiscordTarget(channel_id, interaction.guild_id, slash=state),
        )
        submission = await self._submit(message)
        if submission.outcome in {"closed", "ignored", "duplicate"} and not state.original_used:
            line = CLOSED_LINE if submission.outcome == "closed" else "Nothing to do."
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(content=line)
