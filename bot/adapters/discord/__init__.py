"""The Discord adapter: discord.py events in, rendered replies out, one job per module.

    shards.ShardSet: this replica's share of the gateway shards (Cluster.shards), each shard
    on a client.DiscordClient of its own, its IDENTIFY paced (shards.IdentifyPacer)
    gateway ─► client.DiscordClient (one per shard)
                 ├─ on_message ──► inbound.Inbound ── trigger? ──────────────► intake.submit
                 ├─ setup_hook ──► commands.SlashCommands (/ask /reset …) ───► intake.submit
                 ├─ on_ready ────► catchup.CatchUp: history since the restart ─► inbound.Inbound
                 └─ role, channel and thread updates ──► permissions.Access, inbound.Answered
    intake ─► adapter.open_reply ──► reply.DiscordReply: one reply, edited in place
                                       ├─ render: the text, split at Discord's 2000 characters
                                       ├─ pacing.SendBudget: within Discord's rate limits
                                       └─ outbound: a channel, a new thread or an interaction,
                                          through a REST-only client.DiscordClient
           └► adapter.notify ──────► outbound.Outbound.notify: a short reply

:class:`~bot.adapters.discord.adapter.DiscordAdapter` keeps the lifecycle (check, start,
close, health) and the :class:`~bot.adapters.base.Adapter` methods, and builds the others;
:class:`~bot.adapters.discord.target.DiscordTarget` is where an answer goes, kept in the
inbox for crash recovery.
"""

from __future__ import annotations

from bot.adapters.discord.adapter import DiscordAdapter
from bot.adapters.discord.target import DiscordTarget

__all__ = ["DiscordAdapter", "DiscordTarget"]
