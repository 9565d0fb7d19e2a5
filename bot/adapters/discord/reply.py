"""One streamed answer, :class:`DiscordReply`: posted at the first step, then edited, paced.

A long answer is several messages (:func:`~bot.adapters.discord.render.split_message`) kept
in step as one: parts that changed are edited, new ones posted, and those the final text
no longer needs deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import discord

from bot.adapters.discord.outbound import SlashSurface, Surface
from bot.adapters.discord.pacing import SendBudget, note_429
from bot.adapters.discord.permissions import Access
from bot.adapters.discord.render import progress_line, render_reply, split_message
from bot.contract import Reply
from bot.errors import DeliveryFailed

_log = logging.getLogger(__name__)

# A typing indicator shows for about 10 s; refresh it before it lapses.
TYPING_EVERY_S = 8.0
# Of the requests a second, typing indicators never take the last ones.
TYPING_SPARE = 15

# Starts a background task the adapter owns (cancelled when it closes).
Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[Any]]


class DiscordReply:
    """One answer: posted at the first progress step, edited as the turn goes on.

    Progress and text only change what the reply should show; a flusher task sends the
    latest state at most every ``interval_s`` and within the shared :class:`SendBudget`,
    so a slow Discord never holds up the pipeline and a fast model never floods Discord.
    :meth:`on_reply` lets an update in flight finish, stops the flusher and writes the
    final text, waiting for its slots.
    """

    def __init__(
        self,
        surface: Surface,
        *,
        budget: SendBudget,
        access: Access,
        spawn: Spawn,
        on_posted: Callable[[], None],
        reply_id: int | None,
        interval_s: float,
        label: str,
    ) -> None:
        self._surface = surface
        self._budget = budget
        self._access = access
        self._spawn = spawn
        self._on_posted = on_posted
        self._interval_s = interval_s
        self._label = label
        self._slash = isinstance(surface, SlashSurface)
        # The slash response exists from the defer on; a recovered reply exists already.
        self._ids: list[int] = [0] if self._slash else ([reply_id] if reply_id else [])
        self._shown: list[str | None] = [None] * len(self._ids)
        self._wanted: list[str] = []
        self._body: list[str] = []
        self._last_write = -float("inf")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._posted = asyncio.Event()
        self._done = False
        self._flusher: asyncio.Task[None] | None = None
        self._typer: asyncio.Task[None] | None = None

    @property
    def reply_id(self) -> str | None:
        if self._slash or not self._ids:
            return None
        return str(self._ids[0])

    async def on_progress(self, step: str) -> None:
        if not self._body:
            self._want([progress_line(step)])

    async def on_text(self, text: str) -> None:
        self._body.append(text)
        self._want(split_message("".join(self._body) + " …"))

    async def on_reply(self, reply: Reply) -> None:
        self._done = True
        parts = split_message(render_reply(reply))
        async with self._lock:
            # The lock first: an update in flight (perhaps waiting out a 429, or half-way
            # through posting its parts) finishes, so the final edit neither jumps the
            # rate limit nor starts from a half-recorded set of messages. Only then are
            # the flusher and the typing indicator stopped; neither can hold the lock now.
            await self._stop_background()
            try:
                await self._sync(parts, final=True)
            except discord.Forbidden as exc:
                # Not retried: the permission will not come back by itself.
                self._access.missing_permission(self._surface.channel, "send", exc)
            except discord.RateLimited as exc:
                note_429(exc)
                self._budget.hold(self._surface.channel, exc.retry_after)
                raise DeliveryFailed(
                    f"Discord rate limits channel {self._surface.channel}",
                    retry_after_s=exc.retry_after,
                ) from exc
            except discord.HTTPException as exc:
                if exc.status != 429 and exc.status < 500:
                    raise
                note_429(exc)
                wait = _retry_after(exc)
                if wait is not None:
                    self._budget.hold(self._surface.channel, wait)
                raise DeliveryFailed(
                    f"Discord answered {exc.status} in channel {self._surface.channel}",
                    retry_after_s=wait,
                ) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise DeliveryFailed(f"Discord could not be reached: {exc!r}") from exc

    def _want(self, parts: list[str]) -> None:
        if self._done:
            return
        self._wanted = parts
        self._wake.set()
        if self._flusher is None:
            self._flusher = self._spawn(self._flush(), f"discord-flush:{self._label}")
            self._typer = self._spawn(self._type(), f"discord-typing:{self._label}")

    async def _flush(self) -> None:
        while not self._done:
            await self._wake.wait()
            self._wake.clear()
            pause = self._last_write + self._interval_s - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            try:
                async with self._lock:
                    await self._sync(self._wanted, final=False)
            except discord.RateLimited as exc:
                note_429(exc)
                self._budget.hold(self._surface.channel, exc.retry_after)
            except discord.Forbidden as exc:
                self._access.missing_permission(self._surface.channel, "send", exc)
                return
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                note_429(exc)
                # The final edit carries everything; an update that failed is only late.
                _log.warning("an update of %s failed; going on", self._label, exc_info=True)
            except Exception:
                _log.exception("updating the reply of %s failed; going on", self._label)

    async def _type(self) -> None:
        with contextlib.suppress(discord.HTTPException, aiohttp.ClientError, OSError):
            await self._typing()
            # Posting the reply clears the indicator: show it again right after.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._posted.wait(), TYPING_EVERY_S)
            while not self._done:
                await self._typing()
                await asyncio.sleep(TYPING_EVERY_S)

    async def _typing(self) -> None:
        # Cosmetic: skipped when the second's budget is needed for posts and edits.
        if self._budget.take_global(spare=TYPING_SPARE):
            await self._surface.typing()

    async def _stop_background(self) -> None:
        for task in (self._flusher, self._typer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _sync(self, parts: list[str], *, final: bool) -> None:
        """Make the reply's messages show ``parts``: edit what changed, post what is new."""
        budget, channel = self._budget, self._surface.channel
        spare = 0 if final else 1
        for index, text in enumerate(parts):
            if index < len(self._ids):
                if self._shown[index] == text:
                    continue
                await budget.acquire(channel, "edit", spare=spare)
                try:
                    await self._surface.edit(index, self._ids[index], text)
                except discord.NotFound:
                    if index or self._slash:
                        raise
                    # The reply recorded before a crash was deleted: post a new one.
                    self._ids, self._shown = [], []
                    await self._sync(parts, final=final)
                    return
                self._shown[index] = text
            else:
                await budget.acquire(channel, "create")
                self._ids.append(await self._surface.post(index, text))
                self._shown.append(text)
                if index == 0:
                    self._on_posted()
                    self._posted.set()
            self._last_write = time.monotonic()
        if final:
            for extra in self._ids[len(parts) :]:
                await self._surface.delete(extra)
            del self._ids[len(parts) :], self._shown[len(parts) :]


def _retry_after(exc: discord.HTTPException) -> float | None:
    """Discord's ``Retry-After`` (seconds) on a refused request, when it sent one."""
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
