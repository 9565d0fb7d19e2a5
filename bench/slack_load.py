"""Does the Slack adapter ack at once while a burst of turns runs, and answer each once?

A burst of 50 questions, each a mention starting its own thread, delivered to the bot in
HTTP mode as Slack delivers them (signed POSTs), while the real runtime answers them (the
real embedding model, ChatOllama, aiosqlite, the analysis subprocess) against the fakes
with injected latencies. Slack's redeliveries are injected too: some questions get a copy
at the same moment, others a retry after Slack's 3 s, one a retry whose first copy was
"lost" (never sent). Prints:

* ack latency (p50, p99, max) over every delivery: Slack wants each under 3 s;
* time from a question's first delivery to its final answer (p50, p99, max);
* duplicates: answers beyond one per thread (must be 0), and unanswered questions.

Ollama, Wikipedia and Hacker News run in a process of their own (bench/fake_services.py);
the fake Slack runs on an event loop in its own thread, so the acks are timed by a client
that does not share the bot's loop.

    python bench/slack_load.py [--questions 50] [--source-latency 0.3] [--llm-latency 0.2]
                               [--backend sentence-transformers|hashing]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fake_services import QUESTIONS, FakeServices
from bot.config import Secret, Settings, load_settings
from bot.runtime import Runtime
from tests.conftest import config_text
from tests.fakes.slack import SIGNING_SECRET, FakeSlack
from tests.slack_helpers import SettlingSlackAdapter

_T = TypeVar("_T")
# Slack redelivers an event it did not see acked within 3 s.
SLACK_RETRY_AFTER_S = 3.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=50)
    parser.add_argument("--source-latency", type=float, default=0.3)
    parser.add_argument("--llm-latency", type=float, default=0.2)
    parser.add_argument(
        "--backend", choices=("sentence-transformers", "hashing"), default="sentence-transformers"
    )
    return parser.parse_args()


class SlackThread:
    """The fake Slack on its own event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.fake = self.call(FakeSlack().start())

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.call(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def settings_for(tmp: Path, services: FakeServices, slack: FakeSlack, backend: str) -> Settings:
    config = tmp / "config.toml"
    config.write_text(
        config_text(
            ollama_url=services.urls.ollama,
            wikipedia_url=services.urls.wikipedia,
            hackernews_url=services.urls.hackernews,
            database=tmp / "bench.db",
            backend=backend,
            extra=(
                f'[slack]\nmode = "http"\nhttp_host = "127.0.0.1"\nhttp_port = 0\n'
                f'api_url = "{slack.api_url}"\n'
            ),
        ),
        encoding="utf-8",
    )
    settings = load_settings(config, env={})
    # Every turn must really fetch, and nobody is rate limited in a benchmark burst.
    sources = dataclasses.replace(settings.sources, cache_ttl_s=0.0)
    intake = dataclasses.replace(settings.intake, rate_limit_per_minute=0.0)
    return dataclasses.replace(
        settings,
        sources=sources,
        intake=intake,
        slack_bot_token=Secret("xoxb-bench"),
        slack_signing_secret=Secret(SIGNING_SECRET),
    )


async def burst(slack: FakeSlack, url: str, count: int) -> dict[str, Any]:
    """On the fake's loop: deliver every question with its injected retries; time acks."""
    loop = asyncio.get_running_loop()
    acks: list[float] = []
    sent_at: dict[str, float] = {}
    threads: list[str] = []

    async def send(body: dict[str, Any], retry: int | None, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        # Timed from the first copy that was really sent (the "lost" one was not).
        sent_at.setdefault(body["event"]["ts"], loop.time())
        status, seconds = await slack.post_signed(url, body, retry_num=retry)
        if status != 200:
            raise RuntimeError(f"delivery got HTTP {status}")
        acks.append(seconds)

    sends = []
    for i in range(count):
        event = slack.user_says(QUESTIONS[i % len(QUESTIONS)], user=f"U{i:04d}")
        body = slack.callback(event, event_id=f"EvBench{i}")
        threads.append(event["ts"])
        if i == 0:
            # Its first copy was lost on the way: only the retry arrives.
            sends.append(send(body, 1, SLACK_RETRY_AFTER_S))
            continue
        sends.append(send(body, None))
        if i % 5 == 1:
            sends.append(send(body, 1))  # a copy arriving at the same moment
        if i % 5 == 2:
            sends += [send(body, 1, SLACK_RETRY_AFTER_S), send(body, 2, 2 * SLACK_RETRY_AFTER_S)]
    await asyncio.gather(*sends)
    return {"acks": acks, "sent_at": sent_at, "threads": threads}


def answers(slack: FakeSlack, threads: list[str]) -> dict[str, list[float]]:
    """When each thread's final answer landed (the call that put the feedback buttons on)."""
    return {ts: slack.finished_at(ts) for ts in threads}


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    services = FakeServices()
    slack_thread = SlackThread()
    slack = slack_thread.fake
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_for(Path(tmp), services, slack, args.backend)
            await services.set_latency(source_s=args.source_latency, llm_s=args.llm_latency)
            async with await Runtime.start(settings) as runtime:
                bot = SettlingSlackAdapter.from_settings(settings)
                await runtime.add_adapter(bot)
                result = await asyncio.wrap_future(
                    slack_thread.submit(burst(slack, bot.http_url, args.questions))
                )
                await bot.settle()
            report(slack, result, args)
    finally:
        slack_thread.close()
        await services.close()


def report(slack: FakeSlack, result: dict[str, Any], args: argparse.Namespace) -> None:
    acks: list[float] = result["acks"]
    threads: list[str] = result["threads"]
    finals = answers(slack, threads)
    to_answer = [min(times) - result["sent_at"][ts] for ts, times in finals.items() if times]
    duplicates = sum(max(0, len(slack.in_thread("C0GENERAL", ts)) - 1) for ts in threads)
    unanswered = sum(1 for times in finals.values() if not times)
    print(
        f"questions: {args.questions} (HTTP mode), deliveries: {len(acks)}, "
        f"embeddings: {args.backend}, machine: {os.cpu_count()} cores"
    )
    print(
        f"injected: {args.source_latency * 1000:.0f} ms per source request, "
        f"{args.llm_latency * 1000:.0f} ms per LLM call"
    )
    print()
    rows = [
        ("ack latency p50", percentile(acks, 0.5)),
        ("ack latency p99", percentile(acks, 0.99)),
        ("ack latency max", max(acks, default=0.0)),
        ("time to final answer p50", percentile(to_answer, 0.5)),
        ("time to final answer p99", percentile(to_answer, 0.99)),
        ("time to final answer max", max(to_answer, default=0.0)),
    ]
    for label, seconds in rows:
        print(f"{label:<36}{seconds * 1000:10.0f} ms")
    print(f"{'mean time to final answer':<36}{statistics.fmean(to_answer or [0]) * 1000:10.0f} ms")
    print()
    print(f"{'acks over 3 s':<36}{sum(a >= 3.0 for a in acks):10d}  (target 0)")
    print(f"{'duplicate answers':<36}{duplicates:10d}  (target 0)")
    print(f"{'unanswered questions':<36}{unanswered:10d}  (target 0)")


def main() -> None:
    asyncio.run(run(parse_args()))


if __name__ == "__main__":
    main()
