"""The command line, run as users run it: ``python -m bot ...`` in a subprocess.

The fakes live on this test's event loop, so the child is started with the asyncio
subprocess API (a blocking ``subprocess.run`` would stop the fakes from answering).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pty
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from bot import __version__
from bot.adapters.base import Adapter, Submission
from bot.adapters.inmemory import InMemoryAdapter
from bot.adapters.terminal import TerminalAdapter
from bot.cli import (
    MAX_LOG_MESSAGE,
    PROG_VARIABLE,
    BoundedFormatter,
    build_parser,
    invoked_as,
    main,
    nobody_to_serve,
)
from bot.config import Settings, load_settings
from bot.contract import InboundMessage
from bot.errors import StartupError
from bot.pipeline.prompts import SYNTHESIS_MARKER
from bot.pipeline.wording import EMPTY_HINT
from bot.runtime import Runtime
from bot.store.sqlite import SqliteStore
from tests.fakes.base import Fault
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.ollama import FakeOllama
from tests.fakes.wikipedia import FakeWikipedia
from tests.processes import descendants

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def child_env(**extra: str) -> dict[str, str]:
    secrets = ("_TOKEN", "_SECRET", "_TOKEN_FILE", "_SECRET_FILE", "DATABASE_URL_FILE")
    env = {k: v for k, v in os.environ.items() if not k.endswith(secrets)}
    for name in ("OLLAMA_HOST", "DATABASE_URL", PROG_VARIABLE):
        env.pop(name, None)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


async def bot(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=ROOT,
        env=env or child_env(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=120)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_a_dropped_config_key_is_named_once_and_the_question_still_answered(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    config.write_text(
        config.read_text(encoding="utf-8").replace("[embeddings]\n", "[embeddings]\ntop_k = 5\n"),
        encoding="utf-8",
    )
    run = await bot("ask", "--config", str(config), "--json", "What is BERT?")
    assert run.code == 0, run.err
    assert run.err.count("[embeddings].top_k is ignored since research-agent 0.2.0") == 1
    assert json.loads(run.out)["status"] in {"answered", "degraded"}


async def test_ask_json_with_the_real_embedding_model(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(backend="sentence-transformers")
    run = await bot(
        "ask", "--config", str(config), "--session", "s1", "--json",
        "What is BERT (language model)?", "How does attention work in transformers?",
    )  # fmt: skip
    assert run.code == 0, run.err
    first, second = (json.loads(line) for line in run.out.splitlines())
    for result in (first, second):
        assert set(result) >= {
            "question",
            "answer",
            "topics",
            "sources",
            "unavailable",
            "notices",
            "timings",
            "session",
            # Added with the structured reply:
            "body",
            "status",
            "notice_details",
            "neutralised",
            # Added with hybrid ranking and checked citations:
            "weak_citations",
        }
        assert result["session"] == "terminal:s1"
        assert result["conversation"] == "terminal:s1"
        assert result["status"] == "answered"
        assert result["answer"].startswith(result["body"])
        assert result["neutralised"] == {"links": 0, "mentions": 0}
        assert set(result["timings"]) == {
            "total_s",
            "topics_s",
            "fetch_s",
            "analysis_s",
            "embed_s",
            "synthesis_s",
            "citations_s",
        }
        assert result["unavailable"] == []
        assert result["weak_citations"] == [], "the fake model quotes its sources"
        assert all(set(source["parts"]) >= {"dense", "bm25"} for source in result["sources"])
        assert any(source["cited"] for source in result["sources"])
        for source in result["sources"]:
            listed = f"[{source['n']}] {source['title']} — {source['url']}" in result["answer"]
            assert listed == source["cited"]
    # Real sentence embeddings put the matching article on top.
    assert "BERT" in first["sources"][0]["title"]
    assert (
        "ttention" in second["sources"][0]["title"] or "ransformer" in second["sources"][0]["title"]
    )
    assert second["question"] == "How does attention work in transformers?"


async def test_sessions_list_show_and_reset(write_config: Callable[..., Path]) -> None:
    config = str(write_config())
    assert (await bot("ask", "--config", config, "--session", "x", "What is GPT?")).code == 0
    listed = await bot("sessions", "list", "--config", config)
    assert listed.code == 0 and "terminal:x\t1 turn\tlast active 20" in listed.out
    shown = await bot("sessions", "show", "x", "--config", config)
    assert shown.code == 0 and "you: What is GPT?" in shown.out and "bot: " in shown.out
    assert (await bot("sessions", "reset", "terminal:x", "--config", config)).code == 0
    gone = await bot("sessions", "show", "x", "--config", config)
    assert gone.code == 1 and "No conversation named 'x'" in gone.out
    assert "No conversations yet." in (await bot("sessions", "list", "--config", config)).out
    assert "No conversations yet." in (await bot("conversations", "list", "--config", config)).out


async def test_sessions_show_marks_expired_and_quarantined_questions(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    store = await SqliteStore.open(load_settings(config, env={}).memory.database)
    key = "inmemory:general"
    try:
        assert await store.inbox.claim("inmemory", "old", key, "A stale question?", "{}")
        # A start an hour later: too old to answer.
        later = datetime.now(UTC) + timedelta(hours=1)
        await store.inbox.recover(platforms=["inmemory"], max_age_s=60, now=later)
        assert await store.inbox.claim("inmemory", "bad", key, "A poison question?", "{}")
    finally:
        await store.close()
    # Its one allowed attempt crashed the bot; the next start gives it up.
    store = await SqliteStore.open(load_settings(config, env={}).memory.database)
    try:
        await store.take_ownership()
        (given_up,) = await store.inbox.recover(
            platforms=["inmemory"], max_age_s=3600, max_attempts=1
        )
        assert given_up.quarantined
    finally:
        await store.close()
    shown = await bot("sessions", "show", key, "--config", str(config))
    assert shown.code == 0, shown.err
    stale, poison = shown.out.split("you: ")[1:]
    assert stale.startswith("A stale question?") and "(expired:" in stale
    assert poison.startswith("A poison question?") and "(quarantined:" in poison


async def test_a_config_typo_fails_before_starting_and_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[llm]\nmodle = 'llama3.2'\n", encoding="utf-8")
    run = await bot("ask", "--config", str(config), "hello")
    assert run.code == 2
    assert "Configuration error: unknown key 'modle' in [llm]" in run.err
    assert "Traceback" not in run.err


async def test_every_config_problem_is_reported_in_one_run(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[llm]\nmodle = 'llama3.2'\ntemperature = 5\n[discord]\ntoken = 'tok-123'\n",
        encoding="utf-8",
    )
    secret = tmp_path / "token"
    secret.write_text("tok-456\n", encoding="utf-8")
    env = child_env(DISCORD_TOKEN="tok-456", DISCORD_TOKEN_FILE=str(secret))
    run = await bot("ask", "--config", str(config), "hello", env=env)
    assert run.code == 2, run.err
    lines = run.err.splitlines()
    assert lines[0] == "Configuration errors; 4 problems to fix:"
    assert lines[1].startswith("  1. [discord].token does not belong in config.toml")
    assert lines[2].startswith("  2. unknown key 'modle' in [llm]")
    assert lines[3] == "  3. [llm].temperature must be between 0 and 2, not 5.0"
    assert lines[4].startswith("  4. DISCORD_TOKEN and DISCORD_TOKEN_FILE are both set")
    assert len(lines) == 5
    assert "tok-" not in run.err


async def test_a_missing_embedding_model_names_every_fix(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    text = config.read_text(encoding="utf-8").replace('backend = "hashing"', "")
    config.write_text(text.replace('model_path = ""', 'model_path = "no/such/model"'), "utf-8")
    run = await bot("ask", "--config", str(config), "hello")
    assert run.code == 1
    assert run.err.startswith("Cannot start: cannot load embedding model at ")
    for fix in ("[embeddings].model_path", 'model = "packaged"', 'backend = "hashing"'):
        assert fix in run.err
    assert "Traceback" not in run.err
    assert "[embeddings].model_path is not a directory" in (config.parent / "bot.log").read_text()


async def test_every_start_up_problem_is_reported_at_once(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory", encoding="utf-8")
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[llm]
base_url = "http://127.0.0.1:{closed_port()}"
[embeddings]
model_path = "no/such/model"
[memory]
database = "a-file/bot.db"
[logging]
file = "bot.log"
""",
        encoding="utf-8",
    )
    run = await bot("ask", "--config", str(config), "hello")
    assert run.code == 1, run.err
    assert run.err.startswith("Cannot start; 3 problems to fix:")
    assert "cannot load embedding model at" in run.err
    assert "the memory database" in run.err and "set [memory].database" in run.err
    assert "Ollama is not reachable" in run.err and "ollama serve" in run.err
    assert "Traceback" not in run.err
    log = (tmp_path / "bot.log").read_text(encoding="utf-8")
    assert log.count("ERROR bot.runtime: cannot start: ") == 3


async def test_a_hub_model_with_the_hub_unreachable_fails_within_seconds(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    config = write_config()
    text = config.read_text(encoding="utf-8").replace('backend = "hashing"', "")
    config.write_text(
        text.replace('model_path = ""', 'model = "acme/not-cached-anywhere"'), encoding="utf-8"
    )
    empty_cache = tmp_path / "hf-home"
    # Not HF_HUB_OFFLINE: a hub that does not answer, as on a machine without network.
    env = child_env(HF_HOME=str(empty_cache), HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    del env["HF_HUB_OFFLINE"], env["TRANSFORMERS_OFFLINE"]
    started = time.monotonic()
    run = await bot("ask", "--config", str(config), "hello", env=env)
    took = time.monotonic() - started
    assert run.code == 1, run.err
    assert took < 15, f"took {took:.1f} s"
    (line,) = run.err.splitlines()  # one line, no retry noise
    assert "'acme/not-cached-anywhere' is not in the local model cache" in line
    assert "cannot be reached" in line
    for fix in ("[embeddings].model_path", 'model = "packaged"', 'backend = "hashing"'):
        assert fix in line
    assert "cannot be reached" in (config.parent / "bot.log").read_text(encoding="utf-8")

    offline = await bot(
        "ask", "--config", str(config), "hello", env=child_env(HF_HOME=str(empty_cache))
    )
    assert offline.code == 1 and "HF_HUB_OFFLINE forbids downloading it" in offline.err


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_chat_in_the_terminal_with_commands(write_config: Callable[..., Path]) -> None:
    run = await bot(
        "chat", "--config", str(write_config()), "--session", "t",
        stdin="What is BERT?\n/help\n/q\n/reset\n/quit\nnever read\n",
    )  # fmt: skip
    assert run.code == 0, run.err
    assert "Conversation: terminal:t" in run.out
    assert "bot> " in run.out and "Sources:" in run.out
    assert "/reset makes me forget this conversation" in run.out
    # The terminal's own command is listed with the others: by /help, and for a typo.
    help_part, typo_part = run.out.split("/q is not a command I know.")
    assert help_part.count("/help shows what I do and these commands.\n/quit leaves") == 1
    assert "/help shows what I do and these commands.\n/quit leaves" in typo_part
    assert "Done: I have forgotten this conversation." in run.out
    assert "… Choosing search keywords" in run.err  # progress goes to stderr


async def test_no_command_no_token_and_no_terminal_exits_at_once(
    write_config: Callable[..., Path],
) -> None:
    run = await bot("--config", str(write_config()), stdin="")
    assert run.code == 2, run.err
    (line,) = run.err.splitlines()
    assert "DISCORD_TOKEN" in line and "SLACK_BOT_TOKEN and SLACK_APP_TOKEN" in line
    assert run.out == ""


async def test_the_demo_shows_a_running_summary(write_config: Callable[..., Path]) -> None:
    run = await bot("demo", "--config", str(write_config()))
    assert run.code == 0, run.err
    assert run.out.count("Q: ") == 3
    summary = run.out.split("Running summary of the conversation:")[1]
    assert "asked about" in summary


async def test_ctrl_c_exits_cleanly(write_config: Callable[..., Path]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(write_config()),
        cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # its own process group, like a terminal's foreground job
    )  # fmt: skip
    assert proc.stdout is not None
    await proc.stdout.readuntil(b"you> ")  # ready and waiting for input
    # A terminal's Ctrl-C signals the whole group: the pool workers get SIGINT too.
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 130
    assert b"Interrupted" in err
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err


async def test_sigterm_mid_answer_finishes_that_answer_then_exits(
    write_config: Callable[..., Path], ollama: FakeOllama
) -> None:
    ollama.chunk_delay_s = 0.05  # an answer takes a few seconds to stream
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(write_config()),
        cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readuntil(b"you> "), 60)
    proc.stdin.write(b"What is BERT?\n")
    await proc.stdin.drain()
    await asyncio.wait_for(ollama.wait_for_requests(2, "/api/chat"), 60)  # the answer streams
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    answer = out.decode().split("bot> ")[1]
    assert "Sources:" in answer, "the answer in flight was finished"
    assert b"Stopped; bye." in err and b"Traceback" not in err


async def test_a_reset_from_another_process_is_honoured_by_the_running_bot(
    write_config: Callable[..., Path], ollama: FakeOllama
) -> None:
    config = str(write_config())
    chat = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", config, "--session", "r",
        cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert chat.stdin is not None and chat.stdout is not None

    async def say(line: str) -> str:
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write(f"{line}\n".encode())
        await chat.stdin.drain()
        return (await asyncio.wait_for(chat.stdout.readuntil(b"you> "), 60)).decode()

    await asyncio.wait_for(chat.stdout.readuntil(b"you> "), 60)
    assert "Sources:" in await say("What is BERT?")
    reset = await bot("sessions", "reset", "r", "--config", config)
    assert reset.code == 0 and "Forgot terminal:r" in reset.out
    ollama.requests.clear()
    await say("Who created it?")
    chat.stdin.write(b"/quit\n")
    await asyncio.wait_for(chat.communicate(), timeout=60)
    assert chat.returncode == 0
    prompts = [body["messages"][-1]["content"] for body in ollama.chat_bodies()]
    assert prompts and not [p for p in prompts if "What is BERT?" in p]


async def test_handled_failures_go_to_the_log_file_not_the_terminal(
    write_config: Callable[..., Path], ollama: FakeOllama
) -> None:
    ollama.always_fail = Fault.status(500)
    config = write_config()
    run = await bot("ask", "--config", str(config), "What is BERT?")
    assert run.code == 0, run.err
    assert "language model returned an error" in run.out
    assert "WARNING" not in run.err and "Traceback" not in run.err
    log = (config.parent / "bot.log").read_text(encoding="utf-8")
    assert "keyword extraction failed" in log

    verbose = await bot("ask", "-v", "--config", str(config), "What is BERT?")
    assert "keyword extraction failed" in verbose.err


def test_common_options_work_before_and_after_the_command() -> None:
    parser = build_parser()
    for argv in (
        ["--config", "x.toml", "-v", "ask", "q"],
        ["ask", "--config", "x.toml", "-v", "q"],
        ["--config", "x.toml", "-v", "sessions", "list"],
        ["sessions", "--config", "x.toml", "-v", "list"],
        ["sessions", "list", "--config", "x.toml", "-v"],
    ):
        args = parser.parse_args(argv)
        assert (args.config, args.verbose) == ("x.toml", 1), argv
    assert (parser.parse_args(["chat"]).config, parser.parse_args(["chat"]).verbose) == (None, 0)


async def test_sigterm_shuts_down_and_drains(write_config: Callable[..., Path]) -> None:
    config = write_config()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(config), "--session", "term",
        cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    await proc.stdout.readuntil(b"you> ")
    proc.stdin.write(b"What is BERT?\n")
    await proc.stdout.readuntil(b"you> ")  # answered; its save may still be running
    proc.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 143
    assert b"Stopped" in err and b"Traceback" not in err
    shown = await bot("sessions", "show", "term", "--config", str(config))
    assert "you: What is BERT?" in shown.out and "bot: " in shown.out


async def test_each_ask_without_a_session_is_a_new_conversation(
    write_config: Callable[..., Path],
) -> None:
    config = str(write_config())
    runs = await asyncio.gather(
        bot("ask", "--config", config, "What is BERT?"),
        bot("ask", "--config", config, "What is GPT?"),
    )
    # Both start together on a database neither has created yet.
    assert [r.code for r in runs] == [0, 0], [r.err for r in runs]
    listed = (await bot("sessions", "list", "--config", config)).out.splitlines()
    assert len(listed) == 2 and all("\t1 turn\t" in line for line in listed)


async def test_a_closed_pipe_ends_quietly(write_config: Callable[..., Path]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (``| head -1``) is already gone
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "ask", "--json", "--config", str(write_config()),
        "What is BERT?",
        cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=write_end, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(write_end)
    _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err


async def test_a_reset_that_fails_keeps_the_chat_going(make_settings: Any) -> None:
    async with await Runtime.start(make_settings()) as runtime:
        await runtime.store.close()  # every store call now fails
        out = io.StringIO()
        adapter = TerminalAdapter(
            session="broken",
            stdin=io.StringIO("/reset\n/help\n"),
            stdout=out,
            stderr=io.StringIO(),
        )
        await runtime.add_adapter(adapter)
        await adapter.run()
    assert "could not reach my conversation memory" in out.getvalue()
    assert "/reset makes me forget" in out.getvalue()  # the next line was still handled
    assert "StoreError" not in out.getvalue() and "closed" not in out.getvalue()


async def test_an_unknown_slash_command_in_the_terminal_lists_the_commands(
    make_settings: Any, ollama: FakeOllama
) -> None:
    async with await Runtime.start(make_settings()) as runtime:
        out = io.StringIO()
        adapter = TerminalAdapter(
            session="typo", stdin=io.StringIO("/sauces please\n"), stdout=out, stderr=io.StringIO()
        )
        await runtime.add_adapter(adapter)
        await adapter.run()
    assert "/sauces is not a command I know. My commands are:\n/sources lists" in out.getvalue()
    assert ollama.chat_bodies() == [], "nothing was researched"


async def test_closing_the_terminal_adapter_ends_its_chat_loop(make_settings: Any) -> None:
    async with await Runtime.start(make_settings()) as runtime:
        read_end, write_end = os.pipe()  # input that never comes
        # fdopen on a pipe does not block (ASYNC230 is about files on disk).
        with os.fdopen(read_end) as never, os.fdopen(write_end, "w"):
            adapter = TerminalAdapter(session="s",
                stdin=never, stdout=io.StringIO(), stderr=io.StringIO(),
            )  # fmt: skip
            await runtime.add_adapter(adapter)
            chat = asyncio.create_task(adapter.run())
            await adapter.close()
            await asyncio.wait_for(chat, timeout=5)


async def test_ask_exits_3_only_when_nothing_could_be_answered(
    write_config: Callable[..., Path],
    ollama: FakeOllama,
    wikipedia: FakeWikipedia,
    hackernews: FakeHackerNews,
) -> None:
    config = str(write_config())
    ollama.always_fail = Fault.status(500)
    # The language model is down: the sources alone are an answer, degraded, not failed.
    degraded = await bot("ask", "--json", "--config", config, "What is BERT?")
    assert degraded.code == 0, degraded.err
    (result,) = (json.loads(line) for line in degraded.out.splitlines())
    assert result["status"] == "degraded" and "language model" in result["unavailable"]

    wikipedia.always_fail = hackernews.always_fail = Fault.status(503)
    failed = await bot("ask", "--json", "--config", config, "What is BERT?", "And GPT?")
    assert failed.code == 3, failed.err
    assert {json.loads(line)["status"] for line in failed.out.splitlines()} == {"failed"}
    assert (await bot("ask", "--config", config, "   ")).code == 3  # the hint, nothing asked

    wikipedia.always_fail = hackernews.always_fail = None
    mixed = await bot("ask", "--json", "--config", config, "What is BERT?", "")
    assert mixed.code == 0, mixed.err


async def test_ask_shows_progress_at_once_while_the_packaged_model_loads(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    text = config.read_text(encoding="utf-8").replace('backend = "hashing"', "")
    config.write_text(text.replace('model_path = ""', 'model = "packaged"'), encoding="utf-8")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "ask", "--config", str(config),
        "What is BERT (language model)?",
        cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    first = await asyncio.wait_for(proc.stderr.readuntil(b"Choosing search keywords"), 60)
    first_progress_s = time.monotonic() - started
    out, rest = await asyncio.wait_for(proc.communicate(), timeout=120)
    err = (first + rest).decode()
    assert proc.returncode == 0, err
    assert "Loading the embedding model (packaged model all-MiniLM-L6-v2" in err
    # The model takes seconds to load; the turn starts before it is ready. The bound is
    # loose for a busy 2-core CI machine; it is typically about 1.5 s here.
    assert first_progress_s < 6, f"first progress line after {first_progress_s:.1f} s"
    assert "[1] BERT (language model) — " in out.decode()
    assert "still loading" in err  # what the turn waited for, if it did


async def test_start_up_checks_include_each_adapters_own_check(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    settings = make_settings(memory={"database": str(tmp_path / "a-file" / "bot.db")})
    reject = True

    def adapters() -> list[Adapter[Any]]:
        rejecting, fine = InMemoryAdapter(), InMemoryAdapter()
        rejecting.service.rejects_credentials = reject
        return [rejecting, TerminalAdapter(session="s"), fine]

    with pytest.raises(StartupError) as caught:
        await Runtime.start(settings, adapters=adapters())
    problems = caught.value.problems
    assert len(problems) == 2, problems
    assert "the memory database" in problems[0]
    assert "rejected its token: set MEMORY_TOKEN" in problems[1]

    # Without the problems, the adapters are built, checked, and left to add_adapter.
    reject = False
    async with await Runtime.start(make_settings(), adapters=adapters()) as runtime:
        assert [a.platform for a in runtime.adapters] == ["inmemory", "terminal", "inmemory"]
        assert not any(a.is_alive for a in runtime.adapters)


def pty_env() -> dict[str, str]:
    # This pty does not answer cursor-position requests, as a real terminal would.
    return child_env(TERM="xterm", COLUMNS="120", LINES="40", PROMPT_TOOLKIT_NO_CPR="1")


async def read_until(fd: int, pattern: bytes, seen: bytearray) -> None:
    """Read the pty's output into ``seen`` until ``pattern`` appears in it (60 s at most)."""
    async with asyncio.timeout(60):
        while pattern not in seen:
            await readable(fd)
            try:
                seen += os.read(fd, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                break
    assert pattern in seen, bytes(seen[-2000:])


async def readable(fd: int) -> None:
    """Wait, on the event loop, until ``fd`` can be read."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _set_once, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def test_no_command_at_a_terminal_chats_and_a_long_paste_arrives_whole(
    write_config: Callable[..., Path],
) -> None:
    primary, secondary = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(write_config()),
            cwd=ROOT, env=pty_env(), stdin=secondary, stdout=secondary,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        os.close(secondary)
        seen = bytearray()
        await read_until(primary, b"you>", seen)  # the editor draws the space as a move
        # Longer than the 4095 characters a terminal in cooked mode keeps of one line;
        # sent as a terminal sends a paste (bracketed paste).
        question = "What is BERT? " + "x" * 6000
        paste = b"\x1b[200~" + question.encode() + b"\x1b[201~\r"
        await asyncio.to_thread(os.write, primary, paste)
        await read_until(primary, b"Sources:", seen)
        del seen[: seen.index(b"Sources:")]
        await read_until(primary, b"you>", seen)
        await asyncio.to_thread(os.write, primary, b"\x04")  # Ctrl-D leaves
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        os.close(primary)
    shown = seen.decode(errors="replace")
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    assert "No chat platform configured" in err.decode()
    assert f"Your message was {len(question):,} characters long" in shown


async def test_the_line_editor_keeps_history_and_edits(make_settings: Any) -> None:
    async with await Runtime.start(make_settings()) as runtime:
        asked: asyncio.Queue[str] = asyncio.Queue()

        class Recording:
            """The intake, noting each line the editor hands in."""

            async def submit(self, message: InboundMessage[Any]) -> Submission:
                asked.put_nowait(message.text)
                return await runtime.intake.submit(message)

            async def has_answered(self, conversation: str) -> bool:
                return await runtime.intake.has_answered(conversation)

            async def feedback(self, *vote: Any) -> bool:
                return await runtime.intake.feedback(*vote)

            @property
            def cluster(self) -> Any:
                return runtime.intake.cluster

        out = io.StringIO()
        with create_pipe_input() as keys:
            adapter = TerminalAdapter(
                session="editor", stdout=out, stderr=io.StringIO(),
                editor=(keys, DummyOutput()),
            )  # fmt: skip
            await runtime.add_adapter(adapter, port=Recording())
            chat = asyncio.create_task(adapter.run())
            keys.send_text("/helq\x7fp\r")  # a typo, Backspace, the right letter
            assert await asyncio.wait_for(asked.get(), 30) == "/help"
            keys.send_text("\x1b[A\r")  # Up: the previous line again
            assert await asyncio.wait_for(asked.get(), 30) == "/help"
            keys.send_text("sesion\x1b[D\x1b[D\x1b[Ds\r")  # Left three times, insert
            assert await asyncio.wait_for(asked.get(), 30) == "session"
            keys.send_text("x /quit\x01\x1b[3~\x1b[3~\r")  # Ctrl-A (home), Delete twice
            await asyncio.wait_for(chat, timeout=30)
    assert out.getvalue().count("/reset makes me forget") == 2


async def test_pull_model_pulls_the_configured_model_once(
    write_config: Callable[..., Path], ollama: FakeOllama
) -> None:
    config = str(write_config())
    ollama.models = []

    async def pull() -> Run:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.pull_model", "--config", config,
            cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return Run(proc.returncode, out.decode(), err.decode())

    first = await pull()
    assert first.code == 0, first.err
    assert "Pulling llama3.2" in first.out and "success" in first.out
    assert ollama.is_pulled("llama3.2")
    again = await pull()
    assert again.code == 0 and "already pulled" in again.out
    assert len(ollama.requests_to("/api/pull")) == 1


# ----------------------------------------------------------------------------- bytes, signals


async def test_arguments_that_are_not_utf8_are_answered_not_crashed_on(
    write_config: Callable[..., Path],
) -> None:
    # What `ask $'What is \xff BERT?'` hands Python: an undecodable byte, as a surrogate.
    question = b"What is \xff\xfe BERT?".decode("utf-8", "surrogateescape")
    run = await bot("ask", "--config", str(write_config()), "--json", question)
    assert run.code == 0, run.err
    assert "Traceback" not in run.err
    assert json.loads(run.out)["question"] == "What is \ufffd\ufffd BERT?"


async def test_piped_input_that_is_not_utf8_is_answered_not_crashed_on(
    write_config: Callable[..., Path],
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(write_config()),
        cwd=ROOT, env=child_env(LC_ALL="C.UTF-8"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(
        proc.communicate(b"What is \xff\xfe BERT?\n/session\n"), timeout=120
    )
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    assert b"Sources:" in out, "the question was answered"
    assert b"I remember 1 question here" in out, "and stored, and the input went on"


async def test_bytes_typed_into_the_chat_that_are_not_utf8_are_answered(
    write_config: Callable[..., Path],
) -> None:
    primary, secondary = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "chat", "--config", str(write_config()),
            cwd=ROOT, env=pty_env(), stdin=secondary, stdout=secondary,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        os.close(secondary)
        seen = bytearray()
        await read_until(primary, b"you>", seen)
        await asyncio.to_thread(os.write, primary, b"What is \xff BERT?\r")
        await read_until(primary, b"Sources:", seen)
        del seen[: seen.index(b"Sources:")]
        await read_until(primary, b"you>", seen)
        await asyncio.to_thread(os.write, primary, b"\x04")
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        os.close(primary)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


async def test_two_ctrl_c_during_an_answer_exit_at_once_and_leave_nothing_running(
    write_config: Callable[..., Path], ollama: FakeOllama
) -> None:
    ollama.pace(SYNTHESIS_MARKER, 1.0)  # an answer that takes a while
    primary, secondary = pty.openpty()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "chat", "--config", str(write_config()), "-v",
            cwd=ROOT, env=pty_env(), stdin=secondary, stdout=secondary,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        os.close(secondary)
        assert proc.stderr is not None
        seen = bytearray()
        await read_until(primary, b"you>", seen)
        await asyncio.to_thread(os.write, primary, b"What is BERT?\r")
        await read_until(primary, b"bot>", seen)  # the answer is streaming
        children = descendants(proc.pid)
        assert children, "the pool and its helpers run"
        # The terminal sends each Ctrl-C to the whole foreground group.
        os.killpg(proc.pid, signal.SIGINT)
        err = await asyncio.wait_for(proc.stderr.readuntil(b"turn(s) in flight"), 30)
        os.killpg(proc.pid, signal.SIGINT)  # while the first waits for the answer
        started = time.monotonic()
        _out, rest = await asyncio.wait_for(proc.communicate(), timeout=30)
        err += rest
        took = time.monotonic() - started
    finally:
        os.close(primary)
    assert proc.returncode == 130
    assert took < 5.0, took
    assert err.decode().count("Interrupted; bye.") == 1
    assert "Traceback" not in err.decode() and "UserWarning" not in err.decode()
    left = [p for p in children if _alive(p)]
    assert left == [] or await _gone_soon(left), "no child outlives it"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"


async def _gone_soon(pids: list[int]) -> bool:
    """The resource tracker cleans up, then ends: wait for each pid to end (pidfd)."""
    async with asyncio.timeout(10):
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            try:
                await readable(fd)  # a pidfd reads as ready once its process ended
            finally:
                os.close(fd)
    return True


def test_a_huge_log_message_is_cut_to_a_bounded_line() -> None:
    formatter = BoundedFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1, "reply: %s", ("y" * 3_000_000,), None
    )
    line = formatter.format(record)
    assert len(line) < MAX_LOG_MESSAGE + 100
    assert line.endswith("more characters]")


async def test_a_question_cut_off_in_the_terminal_is_not_answered_later_and_shows_so(
    write_config: Callable[..., Path], ollama: FakeOllama
) -> None:
    config = write_config()
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[logging]", "[intake]\nshutdown_grace_s = 0.2\n\n[logging]"
        ),
        encoding="utf-8",
    )
    ollama.pace(SYNTHESIS_MARKER, 0.5)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "chat", "--config", str(config), "--session", "cut",
        cwd=ROOT, env=child_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readuntil(b"you> "), 60)
    proc.stdin.write(b"What is BERT?\n")
    await proc.stdin.drain()
    await asyncio.wait_for(proc.stdout.readuntil(b"bot> "), 60)  # the answer streams
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the answer gets 0.2 s, and is cut off
    await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 130

    ollama.pace(SYNTHESIS_MARKER, 0.0)
    again = await bot("chat", "--config", str(config), "--session", "cut", stdin="/quit\n")
    assert again.code == 0 and "Sources:" not in again.out, "not answered out of the blue"
    shown = await bot("conversations", "show", "cut", "--config", str(config))
    assert "What is BERT?" in shown.out and "(no answer saved)" in shown.out


# ----------------------------------------------------------------------------- first hour


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], ["With no command, research-agent serves the chat platforms", "NAME_FILE",
              "opens the terminal chat (`research-agent chat`)", "3 ask, demo: no question",
              "143 SIGTERM", "--version", "default: ./config.toml"]),
        (["ask"], ["QUESTION", "default: a new conversation", "--json",
                   "3 no question could be answered", "1 it cannot start"]),
        (["chat"], ["(default: default)", "/quit", "130 Ctrl-C"]),
        (["demo"], ["running summary", "0 done"]),
        (["conversations"], ["`sessions` is this command's older name", "terminal:default",
                             "1 show, reset: no such conversation"]),
        (["conversations", "list"], ["when it was last active"]),
        (["conversations", "show"], ["numbered from 1", "Exit status 1: no such conversation"]),
        (["sessions", "reset"], ["also while the bot runs", "Exit status 1"]),
        (["store", "migrate"], ["FROM", "DATABASE_URL_FILE", "1 the copy failed"]),
    ],
)  # fmt: skip
def test_every_command_has_a_help_with_its_arguments_defaults_and_exit_statuses(
    argv: list[str], says: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser("research-agent").parse_args([*argv, "-h"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: research-agent")
    words = " ".join(shown.split())  # as wrapped for any terminal width
    for text in says:
        assert text in words, text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"research-agent {__version__}\n"


async def test_help_and_version_do_not_load_the_runtime() -> None:
    # LangChain and the agents take over a second to import: only a command that runs
    # the pipeline may pay for them.
    check = (
        "import sys\nfrom bot.cli import main\ntry:\n    main(['--version'])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('bot.runtime', 'langchain_core') if m in sys.modules))"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", check, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert out.decode().splitlines()[-1] == "[]"


def test_hints_name_the_command_the_user_ran() -> None:
    assert invoked_as("/srv/app/.venv/bin/research-agent", {}) == "research-agent"
    assert invoked_as("/srv/app/bot/__main__.py", {}) == "python -m bot"
    assert invoked_as("/srv/app/bot/__main__.py", {PROG_VARIABLE: "scripts/run"}) == "scripts/run"
    assert "(or run `scripts/run chat` in a terminal)" in nobody_to_serve("scripts/run")
    assert build_parser("scripts/run").format_usage().startswith("usage: scripts/run ")


async def test_a_hint_names_what_scripts_run_exported(write_config: Callable[..., Path]) -> None:
    config = str(write_config())
    env = child_env(**{PROG_VARIABLE: "./scripts/run"})
    missing = await bot("conversations", "show", "nope", "--config", config, env=env)
    assert missing.code == 1
    assert "`./scripts/run conversations list` shows them." in missing.out
    plain = await bot("conversations", "show", "nope", "--config", config)
    assert "`python -m bot conversations list` shows them." in plain.out


async def test_ask_json_prints_one_line_per_question_an_empty_one_and_a_command_included(
    write_config: Callable[..., Path],
) -> None:
    run = await bot(
        "ask", "--json", "--config", str(write_config()), "", "What is BERT?", "/help", "  ",
    )  # fmt: skip
    assert run.code == 0, run.err
    empty, answered, command, blank = (json.loads(line) for line in run.out.splitlines())
    assert (empty["question"], empty["status"]) == ("", "failed")
    assert empty["reason"] == "the question is empty"
    assert empty["answer"] == empty["body"] == EMPTY_HINT
    assert empty["conversation"] == answered["conversation"] == command["conversation"]
    assert set(empty) == set(answered), "the same fields on every line"
    assert (answered["status"], answered["reason"]) == ("answered", None)
    assert (command["status"], command["reason"]) == ("command", None)
    assert "/reset makes me forget this conversation" in command["answer"]
    assert (blank["question"], blank["status"]) == ("  ", "failed")

    only_empty = await bot("ask", "--json", "--config", str(write_config()), "")
    assert only_empty.code == 3
    assert json.loads(only_empty.out)["reason"] == "the question is empty"


async def test_with_no_source_reachable_the_terminal_says_which_host_failed_and_how(
    write_config: Callable[..., Path], wikipedia: FakeWikipedia, hackernews: FakeHackerNews
) -> None:
    config = write_config()
    refused = f"127.0.0.1:{closed_port()}"
    text = config.read_text(encoding="utf-8").replace(wikipedia.url, f"http://{refused}")
    config.write_text(text.replace(hackernews.url, "http://nonexistent.invalid"), "utf-8")

    run = await bot("ask", "--config", str(config), "What is BERT?")
    assert run.code == 3, run.err
    assert (
        f"Wikipedia was unavailable for this question. {refused}: connection refused "
        "(after 2 attempts); check the network, or [sources.wikipedia].api_url"
    ) in run.out.splitlines()
    assert (
        "Hacker News was unavailable for this question. nonexistent.invalid: DNS lookup failed ("
    ) in run.out
    assert not [line for line in run.out.splitlines() if line.startswith("_")], "no Markdown"
    assert "… Searching Wikipedia and Hacker News" in run.err
    assert "Analysing and ranking" not in run.err, "nothing to analyse"

    as_json = await bot("ask", "--json", "--config", str(config), "What is BERT?")
    (result,) = (json.loads(line) for line in as_json.out.splitlines())
    assert result["status"] == "failed"
    assert result["reason"] == "no source could be reached (Wikipedia, Hacker News)"
    operator = {n["user"]: n["operator"] for n in result["notice_details"]}
    assert operator["Wikipedia was unavailable for this question."].startswith(refused)
    assert result["notices"] == [
        "Wikipedia was unavailable for this question.",
        "Hacker News was unavailable for this question.",
    ]


async def test_conversations_show_numbers_the_turns_as_the_user_counts_them(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("[memory]\n", "[memory]\nsummarize_after = 2\nkeep_recent = 1\n"), "utf-8"
    )
    first = await bot("ask", "--config", str(config), "--session", "a", "What is GPT?", "And BERT?")
    assert first.code == 0, first.err
    run = await bot(
        "ask", "--config", str(config), "--session", "b",
        "What is BERT?", "Who made it?", "When was it released?",
    )  # fmt: skip
    assert run.code == 0, run.err
    shown = await bot("conversations", "show", "b", "--config", str(config))
    assert shown.code == 0, shown.err
    numbers = [line.split("]")[0] for line in shown.out.splitlines() if line.startswith("[")]
    assert numbers == ["[1", "[2", "[3"], shown.out
    (summary,) = (line for line in shown.out.splitlines() if line.startswith("Summary"))
    assert summary in {f"Summary (up to turn {n}):" for n in (1, 2)}, summary
