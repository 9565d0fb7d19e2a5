"""What the bot remembers of each conversation, around the turns that use it.

:class:`Memory` is the memory agent of the design: it gives each conversation one turn at
a time (:meth:`Memory.turn`), restores a conversation from the store, keeps the last
exchanges in process (:class:`RecentTurns`: the keyword step runs before the store is
read, and this is what lets "and its successor?" resolve), and after a turn saves the
answer and, when the history grows long, folds older turns into a running summary, both
in the background and never lost (:class:`~bot.core.tasks.TaskTracker`).

The next turn of a conversation waits for the previous turn's save, so it sees that
answer in its history; other conversations never wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser

from bot.config import LLMSettings, MemorySettings
from bot.contract import Reply
from bot.core.tasks import TaskTracker
from bot.errors import LLMError, StoreError
from bot.pipeline import prompts
from bot.pipeline.answer_filter import AnswerFilter
from bot.pipeline.llm import call_options, complete_llm
from bot.store import Claim, ConversationState, ConversationStore

_log = logging.getLogger(__name__)

# Exchanges kept in process per conversation, for the keyword step.
RECENT_TURNS = 2


class ConversationLocks:
    """One lock per conversation; unused locks disappear with their last reference."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, conversation: str) -> asyncio.Lock:
        lock = self._locks.get(conversation)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation] = lock
        return lock


class RecentTurns:
    """The last few (question, answer) pairs of the most recently active conversations.

    Each conversation's pairs carry the generation they belong to (when the conversation
    was started, as the store says). A conversation reset elsewhere, by another process,
    comes back with a new generation, and its old pairs are then dropped instead of served.
    """

    def __init__(self, *, per_conversation: int = 2, conversations: int = 1024) -> None:
        self._per = per_conversation
        self._max = conversations
        self._turns: OrderedDict[str, tuple[datetime | None, deque[tuple[str, str]]]] = (
            OrderedDict()
        )

    def add(
        self, conversation: str, question: str, answer: str, *, generation: datetime | None = None
    ) -> None:
        old = self._turns.pop(conversation, None)
        turns = old[1] if old is not None and old[0] == generation else deque(maxlen=self._per)
        turns.append((question, answer))
        self._turns[conversation] = (generation, turns)
        while len(self._turns) > self._max:
            self._turns.popitem(last=False)

    def get(
        self, conversation: str, *, generation: datetime | None = None
    ) -> list[tuple[str, str]]:
        entry = self._turns.get(conversation)
        if entry is None:
            return []
        if entry[0] != generation:
            del self._turns[conversation]
            return []
        return list(entry[1])

    def forget(self, conversation: str) -> None:
        self._turns.pop(conversation, None)


class Memory:
    """Conversations as the turns see them; one instance serves every conversation."""

    def __init__(
        self,
        *,
        store: ConversationStore,
        llm: BaseChatModel,
        llm_settings: LLMSettings,
        settings: MemorySettings,
        tasks: TaskTracker,
    ) -> None:
        self._store = store
        self._llm_settings = llm_settings
        self._settings = settings
        self._tasks = tasks
        self._locks = ConversationLocks()
        self._recent = RecentTurns(per_conversation=RECENT_TURNS)
        self._pending_saves: dict[str, asyncio.Task[Any]] = {}
        self._summarizing: set[str] = set()
        # Five sentences at most: the call needs a few hundred tokens, not the answer's.
        limit = call_options(llm_settings, max_tokens=llm_settings.summary_max_tokens)
        self._summary_chain = prompts.SUMMARY_PROMPT | llm.bind(**limit) | StrOutputParser()

    @contextlib.asynccontextmanager
    async def turn(self, conversation: str) -> AsyncIterator[None]:
        """Hold the conversation for one turn, once the previous turn's save is done."""
        async with self._locks.lock(conversation):
            await self._wait_pending_save(conversation)
            yield

    async def restore(self, conversation: str) -> ConversationState:
        """The conversation from the store. Raises StoreError."""
        return await self._store.load(conversation)

    def recent(self, conversation: str, claim: Claim | None) -> list[tuple[str, str]]:
        """The last exchanges kept in process (empty after a restart or a reset)."""
        return self._recent.get(conversation, generation=_generation(claim))

    def remember(self, conversation: str, claim: Claim | None, reply: Reply) -> None:
        """Keep the exchange; save the answer (and summarise) in the background.

        Without a claim the question was never stored, so there is nothing to save.
        """
        self._recent.add(conversation, reply.question, reply.body, generation=_generation(claim))
        if claim is None:
            return
        save = self._save(conversation, claim.turn_id, reply)
        task = self._tasks.spawn(save, name=f"save:{conversation}")
        self._pending_saves[conversation] = task
        task.add_done_callback(lambda t: self._forget_save(conversation, t))

    async def saved(self, conversation: str) -> None:
        """Return once the answer of the conversation's last turn is in the store (or its
        save failed, logged)."""
        await self._wait_pending_save(conversation)

    async def reset(self, conversation: str) -> bool:
        """Forget a conversation; waits for its running turn and pending save first."""
        async with self.turn(conversation):
            self._recent.forget(conversation)
            return await self._store.reset(conversation)

    async def settle(self) -> None:
        """Wait until no background save or summary is running (memory stays open)."""
        await self._tasks.drain()

    async def drain(self, grace_s: float | None = None) -> bool:
        """Wait for background saves and summaries (shutdown calls this)."""
        return await self._tasks.drain(grace_s=grace_s, final=True)

    # ----------------------------------------------------------------- background work

    def _forget_save(self, conversation: str, task: asyncio.Task[Any]) -> None:
        if self._pending_saves.get(conversation) is task:
            del self._pending_saves[conversation]

    async def _wait_pending_save(self, conversation: str) -> None:
        task = self._pending_saves.get(conversation)
        if task is not None:
            await asyncio.wait([task])

    async def _save(self, conversation: str, turn_id: int, reply: Reply) -> None:
        try:
            stored = await self._store.finish_turn(turn_id, reply.body, sources=reply.sources)
        except StoreError:
            _log.exception("could not save the answer of turn %s in %s", turn_id, conversation)
            return
        if stored and conversation not in self._summarizing:
            self._summarizing.add(conversation)
            self._tasks.spawn(self._summarize(conversation), name=f"summary:{conversation}")

    async def _summarize(self, conversation: str) -> None:
        """Fold older turns into the running summary once the history grows too long."""
        try:
            state = await self._store.load(conversation)
            if 2 * len(state.turns) <= self._settings.summarize_after:
                return
            keep = (self._settings.keep_recent + 1) // 2
            older = state.turns[: len(state.turns) - keep] if keep else state.turns
            if not older:
                return
            raw = await complete_llm(
                self._summary_chain.astream(
                    {"summary": state.summary, "transcript": _transcript(older)}
                ),
                self._llm_settings,
            )
            # The summary goes back into prompts verbatim: no reasoning blocks, no citations.
            cleaner = AnswerFilter(())
            summary = (cleaner.feed(raw) + cleaner.flush()).strip()
            if summary:
                await self._store.save_summary(conversation, summary, older[-1].id)
                _log.info("summarised %d turns of %s", len(older), conversation)
        except (StoreError, LLMError) as exc:
            _log.warning("summary of %s postponed: %r", conversation, exc)
        finally:
            self._summarizing.discard(conversation)


def _generation(claim: Claim | None) -> datetime | None:
    # A reset from another process (``conversations reset``) re-creates the conversation
    # with a new start time: what is held in process for it must not outlive it.
    return claim.conversation_started if claim is not None else None


def _transcript(turns: Sequence[Any]) -> str:
    return prompts.format_history([(t.question, t.answer or "") for t in turns], max_chars=12_000)
