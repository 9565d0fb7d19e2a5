"""The fakes in a process of their own, for benchmarks.

Real Ollama, Wikipedia and Hacker News run elsewhere; serving the fakes from the bot's own
process and event loop would charge their CPU (streaming each token as an NDJSON line,
answering searches) to the turn being measured. The parent controls the child through a
pipe: set latencies, read request counts, stop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.ollama import FakeOllama
from tests.fakes.wikipedia import FakeWikipedia

# Questions the fakes' corpora answer, for the benches' turns.
QUESTIONS = (
    "What is the transformer architecture in deep learning?",
    "How does attention work in machine learning?",
    "What is BERT?",
    "How do recurrent neural networks process sequences?",
    "What is a generative pre-trained transformer?",
    "What is long short-term memory?",
    "Why is Python popular for machine learning?",
    "How do GPT and BERT differ?",
)


@dataclass(frozen=True)
class Urls:
    ollama: str
    wikipedia: str
    hackernews: str


@dataclass(frozen=True)
class Counts:
    llm_calls: int
    source_requests: int


class FakeServices:
    """Parent-side handle; every call is a short round trip over a local pipe."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child,), name="fake-services", daemon=True)
        self._proc.start()
        child.close()
        self.urls: Urls = self._conn.recv()

    async def _call(self, *command: Any) -> Any:
        # A blocking recv() would stall the bot's event loop; do it off the loop.
        return await asyncio.to_thread(self._roundtrip, command)

    def _roundtrip(self, command: tuple[Any, ...]) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    async def set_latency(self, *, source_s: float, llm_s: float) -> None:
        await self._call("latency", source_s, llm_s)

    async def counts(self) -> Counts:
        llm, sources = await self._call("counts")
        return Counts(llm, sources)

    async def close(self) -> None:
        if self._proc.is_alive():
            await self._call("stop")
        await asyncio.to_thread(self._proc.join, 10)
        self._conn.close()


def _serve(conn: Connection) -> None:
    asyncio.run(_main(conn))


async def _main(conn: Connection) -> None:
    async with FakeOllama() as ollama, FakeWikipedia() as wiki, FakeHackerNews() as hn:
        conn.send(Urls(ollama.url, wiki.url, hn.url))
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command[0] == "latency":
                wiki.latency_s = hn.latency_s = command[1]
                ollama.latency_s = command[2]
                conn.send(None)
            elif command[0] == "counts":
                sources = len(wiki.requests) + len(hn.requests)
                conn.send((len(ollama.requests_to("/api/chat")), sources))
            else:
                conn.send(None)
                return
