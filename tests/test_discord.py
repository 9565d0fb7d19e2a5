"""The Discord adapter end to end: real discord.py over real sockets, against a fake Discord.

The runtime is the real one (hashing embeddings), with the fakes of Ollama, Wikipedia and
Hacker News; the only stand-in is :class:`Outcomes`, a pass-through around the intake's
``submit`` that lets a test wait for what the intake did instead of sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot import cli
from bot.adapters.base import Cluster, IntakePort, Submission
from bot.adapters.discord import DiscordAdapter
from bot.adapters.discord.render import LIMIT, split_message
from bot.config import Secret, Settings, load_settings
from bot.contract import InboundMessage, Platform, Rating, conversation_key
from bot.core.metrics import REGISTRY
from bot.errors import ConfigError, PlatformSetupError
from bot.pipeline.prompts import SYNTHESIS_MARKER
from bot.pipeline.wording import UNMATCHED
from bot.runtime import Runtime
from tests.fakes import answer_modes
from tests.fakes.discord import MANAGE_GUILD, TOKEN, FakeDiscord, Json, user
from tests.fakes.ollama import FakeOllama, default_responder, split_tokens

SettingsFactory = Callable[..., Settings]
QUESTION = "What is the transformer architecture in deep learning?"
TOPICS = (QUESTION, "What is BERT in language models?", "What is GPT in language models?")
WAIT_S = 20.0


class Outcomes:
    """The intake as the adapter sees it, recording each outcome so tests can wait for it."""

    def __init__(self, intake: IntakePort) -> None:
        self._intake = intake
        self.seen: list[tuple[InboundMessage[Any], Submission]] = []
        self._changed = asyncio.Condition()

    async def submit(self, message: InboundMessage[Any]) -> Submission:
        submission: Submission = await self._intake.submit(message)
        async with self._changed:
            self.seen.append((message, submission))
            self._changed.notify_all()
        return submission

    async def has_answered(self, conversation: str) -> bool:
        return await self._intake.has_answered(conversation)

    @property
    def cluster(self) -> Cluster:
        return self._intake.cluster

    async def feedback(
        self, platform: Platform, event_id: str, user_id: str, rating: Rating
    ) -> bool:
        return await self._intake.feedback(platform, event_id, user_id, rating)

    def of(self, event_id: str) -> list[str]:
        return [s.outcome for m, s in self.seen if m.event_id == event_id]

    async def wait(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), WAIT_S)


@dataclasses.dataclass
class World:
    fake: FakeDiscord
    guild: int
    general: int
    research: int
    settings: Settings
    runtime: Runtime
    outcomes: Outcomes
    adapter: DiscordAdapter | None = None
    ann: Json = dataclasses.field(default_factory=dict)

    async def start(self, **discord: Any) -> DiscordAdapter:
        settings = self.settings.discord
        if discord:
            settings = dataclasses.replace(settings, **discord)
        adapter = DiscordAdapter(
            settings,
            Secret(TOKEN),
            inbox_max_age_s=self.settings.intake.inbox_max_age_s,
            guild_ready_timeout_s=0.05,
        )
        await self.runtime.add_adapter(adapter, port=self.outcomes)
        await self.runtime.recover()
        self.adapter = adapter
        return adapter

    def mention(self, text: str) -> str:
        return f"<@{self.fake.bot_id}> {text}"

    async def ask(self, channel: int, text: str, **details: Any) -> Json:
        return await self.fake.send_message(channel, text, author=self.ann, **details)

    async def final(self, channel: int, question: Json | None = None) -> Json:
        """The bot's reply in ``channel`` (to ``question``) once it holds its Sources."""

        def find() -> Json | None:
            for message in self.fake.bot_messages(channel):
                reference = message.get("message_reference") or {}
                if question is not None and reference.get("message_id") != question["id"]:
                    continue
                if "**Sources" in message["content"]:
                    return message
            return None

        await asyncio.wait_for(self.fake.wait_for(lambda: find() is not None), WAIT_S)
        found = find()
        assert found is not None
        return found


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


def discord_settings(make_settings: SettingsFactory, fake: FakeDiscord, research: int,
                     **changes: Any) -> Settings:  # fmt: skip
    sections: dict[str, dict[str, Any]] = {
        "discord": {
            "api_url": fake.api_url,
            "gateway_url": fake.gateway_url,
            "research_channels": (research,),
            "edit_interval_s": 0.2,
            "rate_limit_per_minute": 0.0,
        },
        "intake": {"delivery_backoff_s": 0.01},
        # Room for the long answers that test splitting (the fake ignores num_predict).
        "chat": {"max_answer_chars": 20_000, "answer_words": 5000},
        "llm": {"max_tokens": 8192},
    }
    for name, values in changes.items():
        sections.setdefault(name, {}).update(values)
    return make_settings(**sections)


@pytest.fixture
async def world(make_settings: SettingsFactory, fake_discord: FakeDiscord) -> AsyncIterator[World]:
    guild = fake_discord.add_guild(channels=("general", "research"))
    general, research = (int(c["id"]) for c in fake_discord.guilds[guild]["channels"])
    settings = discord_settings(make_settings, fake_discord, research)
    async with await Runtime.start(settings) as runtime:
        outcomes = Outcomes(runtime.intake)
        ann = user(fake_discord.new_id(), "ann")
        yield World(fake_discord, guild, general, research, settings, runtime, outcomes, ann=ann)


def answer_calls(ollama: FakeOllama) -> list[dict[str, Any]]:
    return [b for b in ollama.chat_bodies() if SYNTHESIS_MARKER in str(b["messages"][0])]


def creates(fake: FakeDiscord, channel: int) -> list[Json]:
    return [r.json() for r in fake.requests if r.method == "POST" and
            r.path.endswith(f"/channels/{channel}/messages")]  # fmt: skip


def answers_in(fake: FakeDiscord, channel: int) -> int:
    return sum("**Sources" in m["content"] for m in fake.bot_messages(channel))


def scripted(answer: str) -> Callable[[dict[str, Any]], list[str]]:
    """A model that writes ``answer`` for the synthesis step and plays itself otherwise."""

    def respond(body: dict[str, Any]) -> list[str]:
        if SYNTHESIS_MARKER in str(body["messages"][0]["content"]):
            return split_tokens(answer)
        return default_responder(body)

    return respond


# ----------------------------------------------------------------------------- answering


async def test_a_mention_gets_one_reply_whose_final_edit_has_the_answer_and_sources(
    world: World, ollama: FakeOllama
) -> None:
    await world.start()
    question = await world.ask(world.general, world.mention(QUESTION))
    final = await world.final(world.general, question)

    mine = world.fake.bot_messages(world.general)
    assert len(mine) == 1, "one reply, edited in place"
    assert final["message_reference"]["message_id"] == question["id"]
    assert "[1] [" in final["content"] and "(<https://" in final["content"]
    assert final["flags"] & 4, "link previews suppressed"
    posted = creates(world.fake, world.general)
    assert posted[0]["content"].startswith("-# …"), "the first thing shown is the progress"
    assert posted[0]["nonce"] == f"r{question['id']}.0" and posted[0]["enforce_nonce"]
    assert world.fake.requests_to(f"/api/v10/channels/{world.general}/typing")
    # The mention is not part of the question the model sees.
    asked = str(answer_calls(ollama)[0]["messages"])
    assert "What is the transformer architecture" in asked and "<@" not in asked


async def test_two_threads_keep_separate_memories(world: World, ollama: FakeOllama) -> None:
    first = world.fake.add_thread(world.general, "bert")
    second = world.fake.add_thread(world.general, "gpt")
    await world.start()
    ask_first = await world.ask(first, world.mention("What is BERT in language models?"))
    ask_second = await world.ask(second, world.mention("What is GPT in language models?"))
    await world.final(first, ask_first)
    await world.final(second, ask_second)
    await world.runtime.pipeline.memory.settle()

    memory = world.runtime.store
    keys = [conversation_key("discord", str(world.guild), str(world.general), str(t))
            for t in (first, second)]  # fmt: skip
    questions = [[t.question for t in (await memory.conversations.load(key)).turns] for key in keys]
    assert questions == [["What is BERT in language models?"], ["What is GPT in language models?"]]
    channel = conversation_key("discord", str(world.guild), str(world.general))
    assert (await memory.conversations.load(channel)).turns == ()


async def test_the_same_message_create_twice_is_answered_once(
    world: World, ollama: FakeOllama
) -> None:
    await world.start()
    question = await world.ask(world.research, QUESTION)
    await world.fake.dispatch("MESSAGE_CREATE", question)  # as after a gateway resume
    await world.outcomes.wait(lambda: len(world.outcomes.of(question["id"])) == 2)
    await world.final(world.research, question)
    assert sorted(world.outcomes.of(question["id"])) == ["duplicate", "turn"]
    assert len(world.fake.bot_messages(world.research)) == 1
    assert len(answer_calls(ollama)) == 1


async def test_the_number_of_edits_stays_within_the_budget(
    world: World, ollama: FakeOllama
) -> None:
    ollama.chunk_delay_s = 0.02  # an answer streams for about 1.5 s
    await world.start(edit_interval_s=0.1)
    questions = [await world.ask(world.research, text) for text in TOPICS[:2]]
    finals = [await world.final(world.research, q) for q in questions]
    assert len(finals) == 2
    assert world.fake.rate_limited == [], "no 429: the bot kept under Discord's limits itself"
    route = f"/channels/{world.research}/messages"
    writes = [t for t, method, path, _ in world.fake.timeline
              if method in {"POST", "PATCH"} and route in path]  # fmt: skip
    for i, start in enumerate(writes):
        in_window = [t for t in writes[i:] if t - start < 5.0]
        assert len(in_window) <= 10, "5 creates + 5 edits per 5 s per channel at most"
    per_answer = [len(world.fake.edits[int(f["id"])]) for f in finals]
    assert all(1 <= edits <= 12 for edits in per_answer), per_answer


def discord_429s() -> float:
    """The 429s counted in the bot's metrics so far."""
    found = REGISTRY.get_sample_value(
        "research_agent_platform_rate_limited_total", {"platform": "discord"}
    )
    return found or 0.0


async def test_a_429_on_an_edit_is_waited_out(world: World, ollama: FakeOllama) -> None:
    await world.start()
    world.fake.rate_limit_next("PATCH", r"/channels/\d+/messages/\d+$", retry_after=0.6)
    counted = discord_429s()
    question = await world.ask(world.research, QUESTION)
    final = await world.final(world.research, question)
    assert discord_429s() == counted + 1, "counted, though discord.py retried it itself"
    limited = [(t, s) for t, m, p, s in world.fake.timeline if m == "PATCH"]
    first_429 = next(t for t, status in limited if status == 429)
    after = [t for t, status in limited if t > first_429]
    assert after and min(after) - first_429 >= 0.55, "the retry waited retry_after"
    assert len(world.fake.rate_limited) == 1
    assert "**Sources" in final["content"]


async def test_a_long_answer_with_a_code_block_splits_with_balanced_fences(
    world: World, ollama: FakeOllama
) -> None:
    code = "\n".join(f"    layer_{i} = attention(q, k, v)  # step {i}" for i in range(60))
    prose = " ".join(f"Sentence {i} explains attention [1]." for i in range(40))
    ollama.responder = scripted(f"{prose}\n\n```python\n{code}\n```\n\n{prose} See [2].")
    await world.start()
    await world.ask(world.research, QUESTION)
    await world.final(world.research)  # the Sources are in the last part, not the reply
    parts = [m["content"] for m in world.fake.bot_messages(world.research)]
    assert len(parts) >= 3
    assert all(len(p) <= LIMIT for p in parts)
    assert all(p.count("```") % 2 == 0 for p in parts), "every part closes what it opens"
    assert any(p.startswith("```python") for p in parts[1:]), "a cut block is re-opened"
    assert "**Sources" in parts[-1]
    assert split_message("x" * 10) == ["x" * 10]


async def test_what_the_bot_adds_after_a_streamed_answer_is_in_the_final_message(
    world: World, ollama: FakeOllama
) -> None:
    # No source matches this answer: the bot lists the sources after it has streamed.
    ollama.responder = answer_modes.unsupported
    await world.start()
    question = await world.ask(world.research, QUESTION)
    final = await world.final(world.research, question)
    content = final["content"]
    assert ollama.replies[-1] in content
    assert UNMATCHED in content and "\n[1] " in content, content
    assert content.index(UNMATCHED) < content.index("**Sources")


async def test_everyone_in_the_llm_output_goes_out_with_no_mention_parsed(
    world: World, ollama: FakeOllama
) -> None:
    ollama.responder = scripted("Transformers [1]. @everyone look, <@123> and <@&456> @here.")
    await world.start()
    question = await world.ask(world.research, QUESTION)
    final = await world.final(world.research, question)
    assert "@everyone" not in final["content"] and "<@123>" not in final["content"]
    bodies = [r.json() for r in world.fake.writes()]
    assert bodies and all(b["allowed_mentions"]["parse"] == [] for b in bodies)
    assert all(b["allowed_mentions"].get("replied_user", False) is False for b in bodies)


async def test_the_bot_ignores_itself_and_other_bots(world: World, ollama: FakeOllama) -> None:
    await world.start()
    robot = user(world.fake.new_id(), "robot", bot=True)
    other = await world.fake.send_message(world.research, QUESTION, author=robot)
    mine = await world.fake.send_message(world.research, QUESTION, author=world.fake.bot_user)
    await world.outcomes.wait(lambda: bool(world.outcomes.of(mine["id"])))
    await world.outcomes.wait(lambda: bool(world.outcomes.of(other["id"])))
    assert world.outcomes.of(other["id"]) == ["ignored"]
    assert world.outcomes.of(mine["id"]) == ["ignored"]
    assert ollama.chat_bodies() == []
    assert world.fake.bot_messages(world.research) == [mine]


async def test_system_messages_and_unaddressed_chatter_are_not_taken(
    world: World, ollama: FakeOllama
) -> None:
    await world.start()
    await world.ask(world.general, "just chatting, not asking the bot")
    await world.ask(world.research, "", kind=7)  # a member joined
    probe = await world.ask(world.research, world.mention("/help"))
    await world.outcomes.wait(lambda: bool(world.outcomes.of(probe["id"])))
    taken = [m.event_id for m, _ in world.outcomes.seen if not m.author.is_self]
    assert taken == [probe["id"]]


async def test_an_unknown_slash_command_typed_as_a_message_lists_the_commands(
    world: World, ollama: FakeOllama
) -> None:
    await world.start()
    typed = await world.ask(world.research, "/foo bar")
    mentioned = await world.ask(world.general, world.mention("/sauces"))
    ids = (typed["id"], mentioned["id"])
    await world.outcomes.wait(lambda: all(world.outcomes.of(i) for i in ids))
    assert [world.outcomes.of(i) for i in ids] == [["command"], ["command"]]
    lines = [m["content"] for c in (world.research, world.general)
             for m in world.fake.bot_messages(c)]  # fmt: skip
    assert [line.split(" is not", 1)[0] for line in lines] == ["/foo", "/sauces"]
    assert all("\n/sources lists" in line and "\n/reset" in line for line in lines)
    assert ollama.chat_bodies() == [], "nothing was researched"

    # Discord's own /ask, typed as text, is the question it carries.
    question = await world.ask(world.general, world.mention("/ask " + QUESTION))
    await world.final(world.general, question)
    assert f"Question: {QUESTION}" in str(answer_calls(ollama)[0]["messages"])


# ----------------------------------------------------------------------------- slash commands


async def callback(world: World, interaction: str) -> Json:
    await asyncio.wait_for(
        world.fake.wait_for(lambda: interaction in world.fake.interaction_callbacks), WAIT_S
    )
    return world.fake.interaction_callbacks[interaction]


async def shown(world: World, interaction: str, predicate: Callable[[str], bool]) -> str:
    """What the interaction's response (or its first follow-up) says, once it says it."""
    token = f"itoken-{interaction}"

    def text() -> str | None:
        original = world.fake.originals.get(token)
        if original is not None and predicate(original["content"]):
            return str(original["content"])
        for message in world.fake.followups[token]:
            if predicate(message["content"]):
                return str(message["content"])
        return None

    await asyncio.wait_for(world.fake.wait_for(lambda: text() is not None), WAIT_S)
    found = text()
    assert found is not None
    return found


async def test_reset_by_a_non_admin_is_refused_and_by_an_admin_works(
    world: World, ollama: FakeOllama
) -> None:
    admin_role = world.fake.add_role(world.guild, "moderators")
    await world.start(admin_role_ids=(admin_role,))
    assert {c["name"] for c in world.fake.commands["global"]} == {
        "ask", "reset", "sources", "session", "help"
    }  # fmt: skip
    question = await world.ask(world.research, QUESTION)
    await world.final(world.research, question)
    key = conversation_key("discord", str(world.guild), str(world.research))
    await world.runtime.pipeline.memory.settle()

    mallory = user(world.fake.new_id(), "mallory")
    refused = await world.fake.interact("reset", channel_id=world.research, who=mallory)
    assert (await callback(world, refused))["data"]["flags"] & 64, "an ephemeral refusal"
    assert "Sorry, only" in await shown(world, refused, bool)
    assert (await world.runtime.store.conversations.load(key)).turns, "nothing was forgotten"

    mod = user(world.fake.new_id(), "mod")
    by_role = await world.fake.interact("reset", channel_id=world.research, who=mod,
                                        roles=(admin_role,))  # fmt: skip
    assert "forgotten" in await shown(world, by_role, bool)
    assert (await world.runtime.store.conversations.load(key)).turns == ()

    owner = user(world.fake.new_id(), "owner")
    by_permission = await world.fake.interact(
        "reset", channel_id=world.research, who=owner, permissions=MANAGE_GUILD
    )
    assert "nothing to forget" in await shown(world, by_permission, bool)
    listing = await world.fake.interact("help", channel_id=world.research, who=mallory)
    assert "/reset" in await shown(world, listing, bool)


async def test_an_interaction_is_acknowledged_within_3s_when_the_llm_is_slow(
    world: World, ollama: FakeOllama
) -> None:
    await world.start()
    ollama.latency_s = 1.0
    started = time.monotonic()
    interaction = await world.fake.interact(
        "ask", channel_id=world.research, who=world.ann, options={"question": QUESTION}
    )
    acknowledged = await callback(world, interaction)
    assert acknowledged["at"] - started < 3.0 and acknowledged["type"] == 5
    assert not answer_calls(ollama), "acknowledged before the answer was even asked for"
    answer = await shown(world, interaction, lambda t: "**Sources" in t)
    assert "[1]" in answer


# ----------------------------------------------------------------------------- threads, restarts


async def test_a_follow_up_in_a_thread_needs_no_mention(world: World, ollama: FakeOllama) -> None:
    await world.start(auto_thread=True)
    question = await world.ask(world.research, QUESTION)
    thread = int(question["id"])  # a thread takes the id of the message it starts from
    await asyncio.wait_for(world.fake.wait_for(lambda: thread in world.fake.channels), WAIT_S)
    first = await world.final(thread)
    follow_up = await world.ask(thread, "And how does its attention work?")
    await asyncio.wait_for(world.fake.wait_for(lambda: answers_in(world.fake, thread) == 2), WAIT_S)
    assert world.outcomes.of(follow_up["id"]) == ["turn"]
    assert world.fake.bot_messages(world.research) == [], "the answers went to the thread"
    assert "**Sources" in first["content"]
    await world.runtime.pipeline.memory.settle()
    key = conversation_key("discord", str(world.guild), str(world.research), str(thread))
    assert len((await world.runtime.store.conversations.load(key)).turns) == 2


async def test_a_question_asked_while_the_bot_was_stopped_is_answered_after_it_starts(
    make_settings: SettingsFactory, fake_discord: FakeDiscord, ollama: FakeOllama
) -> None:
    guild = fake_discord.add_guild(channels=("general", "research"))
    research = int(fake_discord.guilds[guild]["channels"][1]["id"])
    thread = fake_discord.add_thread(int(fake_discord.guilds[guild]["channels"][0]["id"]), "t")
    settings = discord_settings(make_settings, fake_discord, research)
    ann = user(fake_discord.new_id(), "ann")
    general = int(fake_discord.guilds[guild]["channels"][0]["id"])
    async with await Runtime.start(settings) as runtime:
        world = World(fake_discord, guild, general, research, settings, runtime,
                      Outcomes(runtime.intake), ann=ann)  # fmt: skip
        await world.start()
        asked = await world.ask(thread, world.mention(QUESTION))
        await world.final(thread, asked)

    missed = fake_discord.post_while_offline(
        research, "What is BERT in language models?", author=ann
    )
    follow_up = fake_discord.post_while_offline(thread, "And who invented it?", author=ann)
    async with await Runtime.start(settings) as runtime:
        world = World(fake_discord, guild, general, research, settings, runtime,
                      Outcomes(runtime.intake), ann=ann)  # fmt: skip
        await world.start()
        await world.final(research, missed)
        await world.final(thread, follow_up)
    # Once more: what was answered is not taken again; a newer miss still is (read after
    # the older history, so its answer means the catch-up went past the older ones).
    later = fake_discord.post_while_offline(research, "What is GPT in language models?", author=ann)
    async with await Runtime.start(settings) as runtime:
        world = World(fake_discord, guild, general, research, settings, runtime,
                      Outcomes(runtime.intake), ann=ann)  # fmt: skip
        await world.start()
        await world.final(research, later)
        assert world.outcomes.of(missed["id"]) == [] and world.outcomes.of(follow_up["id"]) == []
    assert len(fake_discord.bot_messages(research)) == 2, "each answered once"
    assert len(fake_discord.bot_messages(thread)) == 2


async def test_sigterm_mid_answer_finishes_that_answer_then_exits(
    make_settings: SettingsFactory, fake_discord: FakeDiscord, ollama: FakeOllama
) -> None:
    guild = fake_discord.add_guild(channels=("general", "research"))
    research = int(fake_discord.guilds[guild]["channels"][1]["id"])
    settings = discord_settings(make_settings, fake_discord, research)
    settings = dataclasses.replace(settings, discord_token=Secret(TOKEN))
    ollama.chunk_delay_s = 0.02
    serving = asyncio.create_task(
        cli._until_terminated(cli.build_parser().parse_args([]), settings)
    )
    history = f"/api/v10/channels/{research}/messages"
    # The catch-up reads the research channel's history once the gateway is ready.
    await asyncio.wait_for(
        fake_discord.wait_for(
            lambda: any(r.method == "GET" for r in fake_discord.requests_to(history))
        ),
        WAIT_S,
    )
    ann = user(fake_discord.new_id(), "ann")
    question = await fake_discord.send_message(research, QUESTION, author=ann)
    await asyncio.wait_for(ollama.wait_for_requests(2, "/api/chat"), WAIT_S)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(serving, WAIT_S) == 128 + signal.SIGTERM
    replies = fake_discord.bot_messages(research)
    assert len(replies) == 1 and "**Sources" in replies[0]["content"]
    assert replies[0]["message_reference"]["message_id"] == question["id"]


# ----------------------------------------------------------------------------- operations


async def test_a_bad_token_fails_start_up_with_one_clear_line(world: World) -> None:
    world.fake.token = "another-token"
    with pytest.raises(PlatformSetupError, match="DISCORD_TOKEN"):
        await world.start()


async def test_a_missing_message_content_intent_is_explained(world: World) -> None:
    world.fake.message_content_enabled = False
    with pytest.raises(PlatformSetupError, match="MESSAGE CONTENT INTENT"):
        await world.start()


async def test_start_up_checks_name_a_bad_token_or_a_missing_intent_before_connecting(
    world: World,
) -> None:
    adapter = DiscordAdapter(world.settings.discord, Secret(TOKEN))
    assert await adapter.check() is None
    world.fake.message_content_enabled = False
    problem = await adapter.check()
    assert problem is not None and "MESSAGE CONTENT INTENT" in problem
    world.fake.token = "another-token"
    problem = await adapter.check()
    assert problem is not None and "DISCORD_TOKEN" in problem and "\n" not in problem
    assert world.fake.gateway_connections == 0, "all of it before any gateway connection"


async def test_a_channel_the_bot_cannot_post_in_is_logged_once_and_skipped(
    world: World, ollama: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    await world.start()
    world.fake.cannot_send.add(world.research)
    with caplog.at_level(logging.WARNING, logger="bot.adapters.discord"):
        first = await world.ask(world.research, QUESTION)
        await world.outcomes.wait(lambda: bool(world.outcomes.of(first["id"])))
        turn = world.outcomes.seen[-1][1].done
        assert turn is not None
        await turn
        await world.ask(world.research, "What is BERT in language models?")
        probe = await world.ask(world.general, world.mention("/help"))
        await world.outcomes.wait(lambda: bool(world.outcomes.of(probe["id"])))
    warnings = [r for r in caplog.records if "missing permission" in r.getMessage()]
    assert len(warnings) == 1 and str(world.research) in warnings[0].getMessage()
    assert len(answer_calls(ollama)) == 1, "the second question there was not taken"


def test_the_discord_section_reads_ids_and_rejects_typos(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[discord]\nresearch_channels = [1, "22"]\nrate_limit_per_minute = 3\n')
    settings = load_settings(path, env={"DISCORD_TOKEN": "t"})
    assert settings.discord.research_channels == (1, 22)
    assert settings.discord.rate_limit_per_minute == 3.0 and settings.discord_token is not None
    assert load_settings(path, env={}).discord_token is None
    for bad, key in (('research_channel = [1]', "research_channel"),
                     ('gateway_url = "https://x"', "gateway_url"),
                     ("admin_role_ids = [true]", "admin_role_ids")):  # fmt: skip
        path.write_text(f"[discord]\n{bad}\n")
        with pytest.raises(ConfigError, match=key):
            load_settings(path, env={})
