"""The command line, run as users run it: ``python -m bot ...`` in a subprocess.

The fakes live on this test's event loop, so the child is started with the asyncio
subprocess API (a blocking ``subprocess.run`` would stop the fakes from answering).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.adapters.terminal import TerminalAdapter
from bot.agents.memory import MemoryStore
from bot.cli import build_parser
from bot.config import load_settings
from bot.runtime import Runtime
from tests.fakes.base import Fault
from tests.fakes.ollama import FakeOllama

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_TOKEN")}
    env.pop("OLLAMA_HOST", None)
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
    assert gone.code == 1 and "No session named 'x'" in gone.out
    assert "No sessions yet." in (await bot("sessions", "list", "--config", config)).out


async def test_sessions_show_marks_expired_and_quarantined_questions(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    store = await MemoryStore.open(load_settings(config, env={}).memory.database)
    key = "memory:general"
    try:
        assert await store.claim("memory", "old", key, "A stale question?", "{}")
        # A start an hour later: too old to answer.
        later = datetime.now(UTC) + timedelta(hours=1)
        await store.recover(platforms=["memory"], max_age_s=60, now=later)
        assert await store.claim("memory", "bad", key, "A poison question?", "{}")
        # Its one allowed attempt crashed the bot.
        assert await store.recover(platforms=["memory"], max_age_s=3600, max_attempts=1) == []
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


async def test_a_missing_embedding_model_says_how_to_run_without_one(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[embeddings]\nmodel_path = "no/such/model"\n', encoding="utf-8")
    run = await bot("ask", "--config", str(config), "hello")
    assert run.code == 1
    assert "Cannot start: cannot load embedding model" in run.err
    assert 'backend = "hashing"' in run.err
    assert "Traceback" not in run.err


async def test_chat_in_the_terminal_with_commands(write_config: Callable[..., Path]) -> None:
    run = await bot(
        "chat", "--config", str(write_config()), "--session", "t",
        stdin="What is BERT?\n/help\n/reset\n/quit\nnever read\n",
    )  # fmt: skip
    assert run.code == 0, run.err
    assert "Conversation: terminal:t" in run.out
    assert "bot> " in run.out and "Sources:" in run.out
    assert "/reset makes me forget this conversation" in run.out
    assert "Done: I have forgotten this conversation." in run.out
    assert "… Choosing search keywords" in run.err  # progress goes to stderr


async def test_no_command_and_no_tokens_opens_the_terminal_chat(
    write_config: Callable[..., Path],
) -> None:
    run = await bot("--config", str(write_config()), stdin="")
    assert run.code == 0, run.err
    assert "No chat platform configured" in run.err
    assert "research-agent: ask me anything" in run.out


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
    await asyncio.gather(
        bot("ask", "--config", config, "What is BERT?"),
        bot("ask", "--config", config, "What is GPT?"),
    )
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
        await runtime.memory.close()  # every store call now fails
        out = io.StringIO()
        adapter = TerminalAdapter(
            runtime.intake.submit,
            session="broken",
            stdin=io.StringIO("/reset\n/help\n"),
            stdout=out,
            stderr=io.StringIO(),
        )
        await runtime.add_adapter(adapter)
        await adapter.run()
    assert "could not reach my conversation memory" in out.getvalue()
    assert "/reset makes me forget" in out.getvalue()  # the next line was still handled
    assert "MemoryStoreError" not in out.getvalue() and "closed" not in out.getvalue()


async def test_closing_the_terminal_adapter_ends_its_chat_loop(make_settings: Any) -> None:
    async with await Runtime.start(make_settings()) as runtime:
        read_end, write_end = os.pipe()  # input that never comes
        # fdopen on a pipe does not block (ASYNC230 is about files on disk).
        with os.fdopen(read_end) as never, os.fdopen(write_end, "w"):
            adapter = TerminalAdapter(
                runtime.intake.submit, session="s",
                stdin=never, stdout=io.StringIO(), stderr=io.StringIO(),
            )  # fmt: skip
            await runtime.add_adapter(adapter)
            chat = asyncio.create_task(adapter.run())
            await adapter.close()
            await asyncio.wait_for(chat, timeout=5)
