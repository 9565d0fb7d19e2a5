"""The analysis agent and its worker: real reports, bad input, and a child that misbehaves.

Misbehaving children come from tests/scripts/misbehaving_worker.py, injected as the
agent's ``script``; ``keywords`` choose what it does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import pytest

from bot.agents.analysis import WORKER_SCRIPT, AnalysisAgent, parse_report
from bot.agents.analysis_worker import STOP_WORDS
from bot.config import AnalysisSettings
from bot.domain import Article
from bot.errors import AnalysisError, AnalysisTimeout

MISBEHAVING = Path(__file__).parent / "scripts" / "misbehaving_worker.py"

MakeAgent = Callable[..., AnalysisAgent]
PidReport = tuple[str, "asyncio.Future[tuple[int, int]]"]


@pytest.fixture
async def make_agent() -> AsyncIterator[MakeAgent]:
    """Build agents (``make_agent(script=..., timeout_s=...)``), all closed at teardown."""
    agents: list[AnalysisAgent] = []

    def make(script: Path | None = None, **settings: Any) -> AnalysisAgent:
        agent = AnalysisAgent(AnalysisSettings(**settings), script=script)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.close()


def _article(
    source: Literal["wikipedia", "hackernews"], title: str, text: str, rank: int = 0
) -> Article:
    return Article(
        source=source, title=title, url=f"https://example.org/{rank}", text=text, rank=rank
    )


ARTICLES = (
    _article(
        "wikipedia",
        "Python (programming language)",
        "Python is a high-level programming language. Python 3.12 was released in 2023; "
        "the language emphasises code readability.",
        rank=0,
    ),
    _article(
        "wikipedia",
        "Monty Python",
        "Monty Python were a British comedy group. The group wrote sketches for television.",
        rank=1,
    ),
    _article(
        "hackernews",
        "Show HN: A fast Python type checker",
        "It checks types in large codebases. Written for everyday programming.",
        rank=0,
    ),
    _article(
        "hackernews",
        "Rust or Go for systems programming?",
        "Both compile to native code; Rust has no garbage collector.",
        rank=1,
    ),
)


@pytest.fixture
async def pid_report(tmp_path: Path) -> AsyncIterator[PidReport]:
    """A Unix socket the ``sleep`` child connects to, and a future with the pids it sends.

    The child sends ``"<child pid> <grandchild pid>"`` once its grandchild is running.
    """
    reported: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        child, grandchild = (await reader.read()).split()
        if not reported.done():
            reported.set_result((int(child), int(grandchild)))
        writer.close()
        await writer.wait_closed()

    path = str(tmp_path / "pids.sock")
    server = await asyncio.start_unix_server(handle, path)
    async with server:
        yield path, reported


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _gone(pid: int, within: float = 3.0) -> bool:
    """True once ``pid`` has exited (a zombie awaiting its reaper counts as exited).

    A pidfd becomes readable when its process exits, so this waits on an event rather
    than polling, and also works for grandchildren that are not ours to ``waitpid``.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(fd, exited.set)
    try:
        async with asyncio.timeout(within):
            await exited.wait()
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)
        os.close(fd)


# --- the real worker -------------------------------------------------------------------


async def test_report_from_real_articles(make_agent: MakeAgent) -> None:
    agent = make_agent(top_keywords=50)

    report = await agent.analyze(ARTICLES, ["python", "programming"])

    assert report.article_count == 4
    assert dict(report.per_source) == {"wikipedia": 2, "hackernews": 2}
    # Per term: 1.0 in the title, 0.5 only in the text; relevance is the mean over terms.
    assert report.top_articles == (
        ("Python (programming language)", 1.0),
        ("Show HN: A fast Python type checker", 0.75),
        ("Monty Python", 0.5),  # ties keep the source's rank, then input order
        ("Rust or Go for systems programming?", 0.5),
    )
    assert report.average_relevance == pytest.approx((1.0 + 0.5 + 0.75 + 0.5) / 4)
    frequencies = dict(report.keyword_frequencies)
    assert frequencies["python"] == 6
    assert frequencies["programming"] == 4
    assert frequencies["language"] == 3
    assert report.keyword_frequencies[0] == ("python", 6)
    counts = [n for _, n in report.keyword_frequencies]
    assert counts == sorted(counts, reverse=True)
    assert not frequencies.keys() & STOP_WORDS
    assert {"the", "is", "a", "for", "3", "12", "2023"}.isdisjoint(frequencies)


async def test_top_keywords_limits_the_list(make_agent: MakeAgent) -> None:
    report = await make_agent(top_keywords=2).analyze(ARTICLES, ["python"])
    assert report.keyword_frequencies == (("python", 6), ("programming", 4))


async def test_no_articles(make_agent: MakeAgent) -> None:
    report = await make_agent().analyze([], ["anything"])
    assert report.article_count == 0
    assert report.average_relevance == 0.0
    assert report.keyword_frequencies == ()
    assert report.top_articles == ()


async def test_large_input_does_not_deadlock(make_agent: MakeAgent) -> None:
    text = ("Distributed consensus protocols replicate logs across servers. " * 50)[:3000]
    articles = [
        _article("hackernews" if i % 3 else "wikipedia", f"Raft paper {i}", text, rank=i)
        for i in range(300)
    ]

    report = await make_agent().analyze(articles, ["raft", "consensus"])

    assert report.article_count == 300
    assert dict(report.per_source) == {"wikipedia": 100, "hackernews": 200}
    assert report.average_relevance == pytest.approx(0.75)
    assert len(report.top_articles) == 5
    assert report.top_articles[0] == ("Raft paper 0", 0.75)


@pytest.mark.parametrize(
    "stdin",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"keywords": "python", "articles": [], "top_keywords": 5}',
        b'{"keywords": [], "top_keywords": 5}',
        b'{"keywords": [], "articles": [{"title": "t"}], "top_keywords": 5}',
        b'{"keywords": [], "articles": [], "top_keywords": true}',
        b'{"keywords": [], "articles": [], "top_keywords": 0}',
        b"[" * 100_000,
    ],
)
def test_worker_rejects_bad_input(stdin: bytes) -> None:
    done = subprocess.run(
        [sys.executable, "-I", str(WORKER_SCRIPT)],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"bad input" in done.stderr
    assert b"Traceback" not in done.stderr


@pytest.mark.parametrize(
    "stdout",
    [
        b"",
        b"[]",
        b'{"article_count": 1}',
        b'{"article_count": -1, "per_source": {}, "average_relevance": 0, '
        b'"keyword_frequencies": [], "top_articles": []}',
        b'{"article_count": 1, "per_source": {}, "average_relevance": 1.5, '
        b'"keyword_frequencies": [], "top_articles": []}',
        b'{"article_count": 1, "per_source": {}, "average_relevance": NaN, '
        b'"keyword_frequencies": [], "top_articles": []}',
        b'{"article_count": 1, "per_source": {"x": true}, "average_relevance": 0, '
        b'"keyword_frequencies": [], "top_articles": []}',
        b'{"article_count": 1, "per_source": {}, "average_relevance": 0, '
        b'"keyword_frequencies": [["a", 1, 2]], "top_articles": []}',
        b'{"article_count": 1, "per_source": {}, "average_relevance": 0, '
        b'"keyword_frequencies": [], "top_articles": [[1, 0.5]]}',
    ],
)
def test_parse_report_rejects_wrong_shapes(stdout: bytes) -> None:
    with pytest.raises(AnalysisError):
        parse_report(stdout)


# --- misbehaving children --------------------------------------------------------------


async def test_timeout_kills_child_and_grandchild_promptly(
    make_agent: MakeAgent, pid_report: PidReport
) -> None:
    agent = make_agent(script=MISBEHAVING, timeout_s=0.5)
    path, reported = pid_report
    started = time.monotonic()
    task = asyncio.create_task(agent.analyze(ARTICLES, ["sleep", path]))

    child, grandchild = await asyncio.wait_for(reported, 5)
    assert _alive(child)
    assert _alive(grandchild)
    with pytest.raises(AnalysisTimeout):
        await task

    assert time.monotonic() - started < 3.0
    assert await _gone(child)
    assert await _gone(grandchild)


async def test_cancellation_kills_the_group_and_propagates(
    make_agent: MakeAgent, pid_report: PidReport
) -> None:
    agent = make_agent(script=MISBEHAVING, timeout_s=30)
    path, reported = pid_report
    task = asyncio.create_task(agent.analyze(ARTICLES, ["sleep", path]))
    child, grandchild = await asyncio.wait_for(reported, 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await _gone(child)
    assert await _gone(grandchild)


async def test_close_kills_a_running_child(make_agent: MakeAgent, pid_report: PidReport) -> None:
    agent = make_agent(script=MISBEHAVING, timeout_s=30)
    path, reported = pid_report
    task = asyncio.create_task(agent.analyze(ARTICLES, ["sleep", path]))
    child, grandchild = await asyncio.wait_for(reported, 5)

    await agent.close()

    with pytest.raises(AnalysisError, match="closed"):
        await task
    assert await _gone(child)
    assert await _gone(grandchild)
    await agent.close()  # idempotent
    with pytest.raises(AnalysisError, match="closed"):
        await agent.analyze(ARTICLES, ["python"])


async def test_huge_output_is_capped(make_agent: MakeAgent) -> None:
    agent = make_agent(script=MISBEHAVING, max_output_bytes=4096, timeout_s=30)
    started = time.monotonic()

    with pytest.raises(AnalysisError, match="more than 4096 bytes") as caught:
        await agent.analyze([], ["flood"])

    assert type(caught.value) is AnalysisError
    assert time.monotonic() - started < 5.0


async def test_garbage_output_is_an_error(make_agent: MakeAgent) -> None:
    with pytest.raises(AnalysisError, match="invalid JSON"):
        await make_agent(script=MISBEHAVING).analyze([], ["garbage"])


async def test_nonzero_exit_is_an_error_and_stderr_is_logged(
    make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bot.agents.analysis")

    with pytest.raises(AnalysisError, match="status 3"):
        await make_agent(script=MISBEHAVING).analyze([], ["fail"])

    assert "boom" in caplog.text


async def test_missing_interpreter_is_an_error() -> None:
    agent = AnalysisAgent(AnalysisSettings(), python="/nonexistent/python3")
    with pytest.raises(AnalysisError, match="cannot start"):
        await agent.analyze([], ["python"])
    await agent.close()


async def test_child_environment_holds_no_secrets(
    make_agent: MakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "slack-secret")

    report = await make_agent(script=MISBEHAVING).analyze([], ["env"])

    names = {name for name, _ in report.keyword_frequencies}
    assert "PATH" in names
    assert not names & {"DISCORD_TOKEN", "SLACK_BOT_TOKEN", "HOME", "VIRTUAL_ENV"}
    assert names <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE"}


async def test_concurrent_analyses(make_agent: MakeAgent) -> None:
    agent = make_agent()
    first, second = await asyncio.gather(
        agent.analyze(ARTICLES, ["python"]), agent.analyze(ARTICLES[:1], ["python"])
    )
    assert (first.article_count, second.article_count) == (4, 1)


# --- prepared children -----------------------------------------------------------------


def _waiting_workers() -> list[int]:
    """Live (non-zombie) analysis workers that are children of this process."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited while we looked
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if (
            fields.get("PPid", "").strip() == str(os.getpid())
            and not fields.get("State", "").startswith("Z")
            and b"analysis_worker" in cmdline
        ):
            pids.append(int(entry.name))
    return pids


async def test_a_prepared_child_is_used_by_the_next_analysis(make_agent: MakeAgent) -> None:
    agent = make_agent()
    agent.prepare()
    report = await agent.analyze(ARTICLES, ["transformer"])
    assert report.article_count == len(ARTICLES)
    # Had analyze started a child of its own, the prepared one would still be waiting.
    assert _waiting_workers() == []


async def test_prepared_children_are_bounded_and_killed_at_close(make_agent: MakeAgent) -> None:
    agent = make_agent()
    for _ in range(10):
        agent.prepare()
    await agent.close()
    assert _waiting_workers() == []
    agent.prepare()  # after close: a no-op, not a leak
    assert _waiting_workers() == []
