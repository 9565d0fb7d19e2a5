"""The intake's steps, each alone with a stand-in ``next``, and its small parts."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.adapters.base import IntakePort, Submission
from bot.contract import Author, InboundMessage, Platform, Reply, conversation_key
from bot.intake.chain import (
    Context,
    IgnoreBots,
    Queue,
    RateLimit,
    SeenRecently,
    SkipEmpty,
    compose,
)
from bot.intake.commands import NotACommand, help_text, parse_command
from bot.intake.delivery import GuardedReply
from bot.intake.ratelimit import LocalBuckets, RateLimiter, describe_wait


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Notes:
    """A stand-in adapter that records what the steps tell the author."""

    platform: Platform = "inmemory"
    admins = "admins"
    command_prefix = "/"
    own_commands: tuple[str, ...] = ()
    recovers = True

    def __init__(self, rate: float | None = None) -> None:
        self.rate_limit_per_minute = rate
        self.notes: list[tuple[str, bool]] = []

    async def check(self) -> str | None:
        return None

    async def start(self, intake: IntakePort) -> None: ...

    async def close(self) -> None: ...

    async def wait_stopped(self) -> None: ...

    @property
    def is_alive(self) -> bool:
        return True

    def open_reply(self, message: InboundMessage[Any], *, reply_id: str | None = None) -> Any:
        raise NotImplementedError

    async def notify(self, message: InboundMessage[Any], text: str, *, private: bool) -> None:
        self.notes.append((text, private))

    def encode_target(self, target: Any) -> Mapping[str, Any]:
        return {}

    def decode_target(self, data: Mapping[str, Any]) -> Any:
        return None


def message(
    text: str = "What is BERT?", *, author: str = "u1", **flags: bool
) -> InboundMessage[None]:
    return InboundMessage(
        text=text,
        author=Author(author, author, **flags),
        conversation=conversation_key("inmemory", "general"),
        platform="inmemory",
        event_id="e1",
        sent_at=datetime.now(UTC),
        target=None,
    )


async def passed(context: Context) -> Submission:
    return Submission("turn")


# ----------------------------------------------------------------------------- steps


async def test_an_event_seen_before_stops_at_the_door_and_memory_is_bounded() -> None:
    step = SeenRecently(size=2)
    adapter = Notes()

    def event(event_id: str) -> Context:
        return Context(dataclasses.replace(message(), event_id=event_id), adapter)

    assert (await step(event("a"), passed)).outcome == "turn"
    assert (await step(event("a"), passed)).outcome == "duplicate"
    await step(event("b"), passed)
    await step(event("c"), passed)  # "a" is the oldest and is forgotten
    assert (await step(event("a"), passed)).outcome == "turn"


async def test_the_bots_own_messages_and_other_bots_are_ignored() -> None:
    step = IgnoreBots(respond_to_bots=False)
    adapter = Notes()
    assert (await step(Context(message(is_self=True), adapter), passed)).outcome == "ignored"
    assert (await step(Context(message(is_bot=True), adapter), passed)).outcome == "ignored"
    assert (await step(Context(message(), adapter), passed)).outcome == "turn"


async def test_other_bots_can_be_answered_when_configured_but_never_itself() -> None:
    step = IgnoreBots(respond_to_bots=True)
    adapter = Notes()
    assert (await step(Context(message(is_bot=True), adapter), passed)).outcome == "turn"
    self_bot = message(is_bot=True, is_self=True)
    assert (await step(Context(self_bot, adapter), passed)).outcome == "ignored"


async def test_an_empty_message_gets_a_hint_and_no_turn() -> None:
    adapter = Notes()
    assert (await SkipEmpty()(Context(message("   "), adapter), passed)).outcome == "empty"
    assert "research question" in adapter.notes[0][0]


async def test_the_rate_limit_allows_a_burst_then_refuses_saying_when() -> None:
    clock = Clock()
    step = RateLimit(per_minute=6, burst=2, buckets=LocalBuckets(clock))
    adapter = Notes()
    outcomes = [(await step(Context(message(), adapter), passed)).outcome for _ in range(3)]
    assert outcomes == ["turn", "turn", "rate_limited"]
    text, private = adapter.notes[0]
    assert private and "in 10 seconds" in text and "did not take that question" in text
    # Another user has a bucket of their own.
    other = await step(Context(message(author="u2"), adapter), passed)
    assert other.outcome == "turn"
    clock.now += 10  # one token back at 6 per minute
    assert (await step(Context(message(), adapter), passed)).outcome == "turn"
    assert (await step(Context(message(), adapter), passed)).outcome == "rate_limited"


async def test_questions_sent_before_the_bot_started_are_not_rate_limited() -> None:
    started = datetime.now(UTC)
    step = RateLimit(per_minute=1, burst=1, buckets=LocalBuckets(Clock()), started=started)
    adapter = Notes()
    backlog = dataclasses.replace(message(), sent_at=started - timedelta(minutes=5))
    for _ in range(4):  # asked while the bot was down, caught up now
        assert (await step(Context(backlog, adapter), passed)).outcome == "turn"
    outcomes = [(await step(Context(message(), adapter), passed)).outcome for _ in range(2)]
    assert outcomes == ["turn", "rate_limited"]


async def test_an_adapter_can_turn_the_rate_limit_off_or_set_its_own() -> None:
    clock = Clock()
    step = RateLimit(per_minute=1, burst=1, buckets=LocalBuckets(clock))
    unlimited = Notes(rate=0)
    for _ in range(5):
        assert (await step(Context(message(), unlimited), passed)).outcome == "turn"


async def test_the_queue_says_how_many_are_ahead_and_keeps_count() -> None:
    busy: Counter[str] = Counter()
    step = Queue(busy)
    adapter = Notes()
    for _ in range(3):
        await step(Context(message(), adapter), passed)
    key = conversation_key("inmemory", "general")
    assert busy[key] == 3  # StartTurn's task gives each back when its turn ends
    assert [text for text, _ in adapter.notes] == [
        "I am still working on an earlier question here; yours is next.",
        "I am still working on an earlier question here; yours is queued behind 2.",
    ]


async def test_a_failing_turn_start_gives_its_queue_place_back() -> None:
    busy: Counter[str] = Counter()

    async def broken(context: Context) -> Submission:
        raise RuntimeError("shutting down")

    with pytest.raises(RuntimeError):
        await Queue(busy)(Context(message(), Notes()), broken)
    assert not busy


async def test_steps_compose_in_order() -> None:
    seen: list[str] = []

    def step(name: str) -> Any:
        async def run(context: Context, after: Any) -> Submission:
            seen.append(name)
            result: Submission = await after(context)
            return result

        return run

    handler = compose([step("a"), step("b")], passed)
    assert (await handler(Context(message(), Notes()))).outcome == "turn"
    assert seen == ["a", "b"]


# ----------------------------------------------------------------------------- parts


def test_token_bucket_refills_at_its_rate_and_caps_at_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.check("a").allowed for _ in range(4)] == [True, True, True, False]
    clock.now += 100  # a long pause refills to the burst, not beyond
    assert [limiter.check("a").allowed for _ in range(4)] == [True, True, True, False]
    verdict = limiter.check("a")
    assert not verdict.allowed and verdict.retry_after_s == pytest.approx(1.0)


def test_quiet_users_buckets_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    for user in range(100):
        limiter.check(f"u{user}")
    clock.now += 10
    limiter.check("new")
    assert len(limiter._buckets) == 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "in 1 second"),
        (9.1, "in 10 seconds"),
        (61, "in about 1 minute"),
        (300, "in about 5 minutes"),
    ],
)
def test_waits_read_naturally(seconds: float, text: str) -> None:
    assert describe_wait(seconds) == text


@pytest.mark.parametrize(
    ("text", "command"),
    [("/reset", "reset"), ("reset", "reset"), (" RESET ", "reset"), ("!sources", "sources"),
     ("/session", "session"), ("help", "help"), ("/help.", "help"), ("reset everything", None),
     ("What is reset?", None), ("", None)],
)  # fmt: skip
def test_commands_are_whole_messages(text: str, command: str | None) -> None:
    assert parse_command(text) == command


@pytest.mark.parametrize(
    ("text", "prefix", "parsed"),
    [("/foo", "/", NotACommand("/foo")),
     ("/Foo bar baz", "/", NotACommand("/Foo", "bar baz")),
     ("/what?", "/", NotACommand("/what")),
     ("/set-model llama", "/", NotACommand("/set-model", "llama")),
     ("/reset now", "/", NotACommand("/reset", "now")),
     ("@bot /foo", "/", None),  # an adapter removes its mention; this one was not
     ("/usr/bin is what?", "/", None), ("/r/rust, what is it?", "/", None),
     ("/2024 in review?", "/", None), ("/ what", "/", None), ("What is /foo?", "/", None),
     ("foo", "", None), ("", "", None),
     ("/research foo", "/research ", NotACommand("/research foo")),
     ("/research What is Rust?", "/research ", NotACommand("/research What", "is Rust?")),
     ("/research sources", "/research ", "sources"), ("/research", "/research ", "help"),
     ("/foo", "/research ", NotACommand("/foo"))],
)  # fmt: skip
def test_a_slash_and_one_word_of_letters_is_written_as_a_command(
    text: str, prefix: str, parsed: object
) -> None:
    assert parse_command(text, prefix) == parsed


def test_a_known_command_given_arguments_is_told_apart_from_an_unknown_one() -> None:
    assert NotACommand("/reset", "now").known and NotACommand("/research help", "me").known
    assert not NotACommand("/foo").known and not NotACommand("/research foo").known


def test_help_is_written_with_the_platforms_prefix() -> None:
    assert "/research reset" in help_text("/research ")
    assert "\n/sources" in help_text("/")


class FlakyStream:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.delivered: list[Reply] = []
        self.texts: list[str] = []
        self._id: str | None = None

    @property
    def reply_id(self) -> str | None:
        return self._id

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("platform down")

    async def on_progress(self, step: str) -> None:
        self._maybe_fail()
        self._id = "r1"

    async def on_text(self, text: str) -> None:
        self._maybe_fail()
        self.texts.append(text)

    async def on_reply(self, reply: Reply) -> None:
        self._maybe_fail()
        self._id = "r1"
        self.delivered.append(reply)


async def test_delivery_skips_failed_updates_and_retries_the_final_reply() -> None:
    stream = FlakyStream(failures=3)
    ids: list[str] = []

    async def record(reply_id: str) -> None:
        ids.append(reply_id)

    guarded = GuardedReply(stream, label="t", retries=3, backoff_s=0, on_reply_id=record)
    await guarded.on_progress("working")  # fails, skipped
    await guarded.on_text("partial")  # fails, skipped
    reply = Reply("q", "body", "k")
    assert await guarded.deliver(reply)  # one failure, then through
    assert stream.delivered == [reply] and stream.texts == []
    assert ids == ["r1"]  # recorded once, when it first appeared


async def test_delivery_gives_up_after_its_retries() -> None:
    stream = FlakyStream(failures=10)
    guarded = GuardedReply(stream, label="t", retries=2, backoff_s=0)
    assert not await guarded.deliver(Reply("q", "body", "k"))
    assert stream.failures == 7
