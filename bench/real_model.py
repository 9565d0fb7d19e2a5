"""Benchmark: what a REAL language model does to retrieval and answers, end to end.

Runs the labelled conversations of ``bench/retrieval.py`` (tests/fakes/confusable.py:
chat-style questions with follow-ups, each with its gold source) through the real pipeline
(the runtime, the intake, the fetch agent against the fakes serving the set's articles and
stories, the embedding pool with the real model), with the LLM a real model server you
started: Ollama (or anything Ollama-compatible, such as ``../shared/realllm/ollama_shim.py``),
or with ``--provider openai`` an OpenAI-compatible server (llama.cpp's, vLLM, LM Studio).
Nothing here is scripted, so the figures are what a user of that model would get:

* hit@1: the gold source ranked first among the turn's sources;
* uncited: answers that cite no source; and who cited the others: the model, the bot by
  attributing the model's sentences, or the bot listing the best sources after an answer
  no source matched or instead of an empty one;
* keyword replies: turns whose reply was not used as it came (prose, off topic, cut...),
  and the topics searched;
* answer length in words, against the prompt's target; turns cut at the token limit;
* statuses (answered, degraded, failed) with their notices; seconds per turn.

Run by hand (CI has no model):

    python bench/real_model.py --base-url http://127.0.0.1:11434 [--provider ollama|openai]
        [--model llama3.2] [--turns N] [--backend sentence-transformers|hashing] [-v]
        [--save-keywords FILE] [--save-answers FILE]

``--save-answers FILE`` writes every turn's whole answer (with its status, notices and who
cited it) to a JSON file, for reading what the model wrote beyond ``-v``'s first line.
``--save-keywords FILE`` writes each question's keyword reply, as the model wrote it, to a
JSON file. ``--replay-keywords FILE`` then needs no model: the fake Ollama gives those
replies to the keyword prompt and the scripted answers to everything else, so what a
change to the search plan or the ranking does with a real model's keywords is measured
in a minute, and the same every run (``bench/data/`` keeps SmolLM2-135M's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.adapters.inmemory import InMemoryAdapter
from bot.config import Settings, load_settings
from bot.contract import Reply
from bot.pipeline import citations
from bot.pipeline.wording import ASKED_AGAIN, UNMATCHED
from bot.runtime import Runtime
from tests.conftest import config_text
from tests.fakes import confusable
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.ollama import FakeOllama, Responder, split_tokens
from tests.fakes.wikipedia import FakeWikipedia

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Outcome:
    question: str
    gold: tuple[str, ...]
    reply: Reply
    seconds: float
    keywords_rejected: bool

    @property
    def hit(self) -> bool:
        return bool(self.reply.sources) and self.reply.sources[0].title in self.gold

    @property
    def cited(self) -> bool:
        return any(s.cited for s in self.reply.sources)

    @property
    def citing(self) -> str:
        """Who cited: the model; the bot, by attribution only; the bot listing the sources
        after an answer no source matched (``unmatched``: the model's own words still cite
        nothing), or instead of one (``listed``: the model wrote nothing usable, or was
        down); the model's second answer, shown after a first no source matched
        (``again``); or nobody."""
        kinds = {notice.kind for notice in self.reply.notices}
        if not self.cited:
            return "none"
        if kinds & {"answer_empty", "llm_unavailable"}:
            return "listed"
        if UNMATCHED in self.reply.body:
            return "unmatched"
        if ASKED_AGAIN in self.reply.body:
            return "again"
        return "model" if citations.cited_sentences(self.reply.body) else "attributed"

    @property
    def model_citations(self) -> tuple[int, int]:
        """The model's own ``[n]`` (one per sentence and number), and how many of them the
        citation check found weak: the reader sees those as ``[n?]``."""
        made = sum(len(c.numbers) for c in citations.cited_sentences(self.reply.body))
        return made, len(self.reply.weak_citations)

    @property
    def words(self) -> int:
        # Words as a reader (and the bot's length cap) counts them: between spaces.
        return len(self.reply.body.split())


class KeywordLog(logging.Handler):
    """Counts the turns whose keyword reply the pipeline did not use as it came (INFO),
    and keeps every reply as the model wrote it (DEBUG), by question."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.rejected = 0
        self.replies: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if record.levelno == logging.DEBUG and message.startswith("keyword reply to"):
            question, reply = record.args if isinstance(record.args, tuple) else ("", "")
            self.replies[str(question)] = str(reply)
        elif message.startswith(("keyword reply", "keyword extraction failed")):
            self.rejected += 1


def replaying(path: Path) -> Responder:
    """The fake model: recorded keyword replies, the scripted set's answers otherwise."""
    recorded: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))

    def responder(body: dict[str, Any]) -> list[str]:
        question = confusable.keyword_question(body)
        if question in recorded:
            return split_tokens(recorded[question])
        return confusable.keyword_responder(body)

    return responder


def settings_for(tmp: Path, args: argparse.Namespace, urls: tuple[str, str]) -> Settings:
    path = tmp / "config.toml"
    path.write_text(
        config_text(
            ollama_url=args.base_url,
            wikipedia_url=urls[0],
            hackernews_url=urls[1],
            database=tmp / "bench.db",
            backend=args.backend,
            llm_provider=args.provider,
        ),
        encoding="utf-8",
    )
    settings = load_settings(path, env={})
    # A small model on a shared CPU is slow: the test config's 10 s read timeout is not.
    llm = dataclasses.replace(settings.llm, model=args.model, timeout_s=600.0, call_timeout_s=900.0)
    chat = dataclasses.replace(settings.chat, turn_timeout_s=1800.0)
    return dataclasses.replace(settings, llm=llm, chat=chat)


class NotReady(Exception):
    """The model server failed the bot's start-up check (the message says how to fix it)."""


async def collect(args: argparse.Namespace, keywords: KeywordLog) -> list[Outcome]:
    outcomes: list[Outcome] = []
    orchestrator = logging.getLogger("bot.pipeline.orchestrator")
    orchestrator.addHandler(keywords)
    orchestrator.setLevel(logging.DEBUG)  # the replies are DEBUG, "not used" lines INFO
    async with contextlib.AsyncExitStack() as stack:
        wiki = await stack.enter_async_context(FakeWikipedia(confusable.pages()))
        hn = await stack.enter_async_context(FakeHackerNews(confusable.stories()))
        if args.replay_keywords:
            fake = await stack.enter_async_context(FakeOllama())
            fake.responder = replaying(args.replay_keywords)
            fake.honours_format = False  # the replies are what the real server sent

            args.base_url, args.provider = fake.url, "ollama"
        with tempfile.TemporaryDirectory() as tmp:
            settings = settings_for(Path(tmp), args, (wiki.url, hn.url))
            args.answer_words = getattr(settings.chat, "answer_words", None)
            async with await Runtime.start(settings) as runtime:
                if runtime.llm_warning:
                    # The bot would start and answer every turn with the sources alone;
                    # measured, that is a bench of the fallback, not of the model.
                    raise NotReady(runtime.llm_warning)
                bot = InMemoryAdapter()
                await runtime.add_adapter(bot)
                for n, conversation in enumerate(confusable.conversations()):
                    for turn in conversation.turns:
                        if args.turns and len(outcomes) >= args.turns:
                            return outcomes
                        started, rejected = time.perf_counter(), keywords.rejected
                        reply = await bot.ask(turn.question, channel=f"c{n}")
                        seconds = time.perf_counter() - started
                        outcomes.append(
                            Outcome(
                                turn.question,
                                turn.gold,
                                reply,
                                seconds,
                                keywords_rejected=keywords.rejected > rejected,
                            )
                        )
                        if args.verbose:
                            show(outcomes[-1])
                    await runtime.pipeline.memory.settle()
    return outcomes


def show(o: Outcome) -> None:
    mark = "hit " if o.hit else "miss"
    print(
        f"[{mark}] {o.seconds:5.1f} s {o.reply.status:<8} {o.words:4d} words "
        f"{'cited' if o.cited else 'UNCITED'}  {o.question}\n"
        f"        topics: {'; '.join(o.reply.topics)}"
        f"{'  (keyword reply not used as is)' if o.keywords_rejected else ''}\n"
        f"        first: {o.reply.sources[0].title if o.reply.sources else '-'}"
        f"  gold: {', '.join(o.gold)}\n"
        f"        answer: {_excerpt(o.reply.body)}",
        flush=True,
    )


def _excerpt(body: str, limit: int = 240) -> str:
    flat = " ".join(body.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def report(outcomes: Sequence[Outcome], args: argparse.Namespace) -> None:
    n = len(outcomes)
    if not n:
        print("no turns ran")
        return
    words = sorted(o.words for o in outcomes)
    seconds = [o.seconds for o in outcomes]
    statuses = Counter(o.reply.status for o in outcomes)
    notices = Counter(notice.kind for o in outcomes for notice in o.reply.notices)
    own_words = sum(
        1 for o in outcomes for topic in o.reply.topics if _shares_words(topic, o.question)
    )
    topics = sum(len(o.reply.topics) for o in outcomes)
    target = args.answer_words
    print(f"model {args.model} at {args.base_url} ({args.provider}); {n} turns")
    hits = sum(o.hit for o in outcomes)
    print(f"hit@1            {hits / n:.3f} ({hits} of {n})")
    print(f"uncited answers  {sum(not o.cited for o in outcomes)} of {n}")
    citing = Counter(o.citing for o in outcomes)
    print(
        f"cited by         the model {citing['model']}, the bot's attribution only "
        f"{citing['attributed']}, the bot's list of sources after an answer no source "
        f"matched {citing['unmatched']} or instead of an empty one {citing['listed']}, "
        f"nobody {citing['none']}; a second answer after one no source matched "
        f"{citing['again']}"
    )
    own = citing["model"] + citing["attributed"]
    print(
        f"answer's own words cited (the model's or attributed): {own} of {n}, "
        f"{own + citing['again']} with the second answers"
    )
    made = [o.model_citations for o in outcomes if o.citing == "model"]
    print(
        f"model citations  {sum(m for m, _ in made)}, {sum(w for _, w in made)} of them weak "
        f"(shown as [n?]); answers whose every model citation is weak: "
        f"{sum(0 < m <= w for m, w in made)}"
    )
    print(
        f"keyword replies  {sum(o.keywords_rejected for o in outcomes)} of {n} not used as "
        f"they came; topics searched {topics} ({topics / n:.1f} per turn), {own_words} "
        "sharing a word with the question"
    )
    print(
        f"answer words     median {statistics.median(words):.0f}, p90 "
        f"{words[min(n - 1, int(n * 0.9))]}, max {words[-1]}"
        + (
            f"; target {target}, {sum(w > target * 1.5 for w in words)} over it by more than 50%"
            if target
            else ""
        )
    )
    print(
        f"seconds per turn median {statistics.median(seconds):.1f}, max {max(seconds):.1f}, "
        f"total {sum(seconds):.0f}"
    )
    print("statuses         " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    if notices:
        print("notices          " + ", ".join(f"{k} {v}" for k, v in sorted(notices.items())))


def answer_record(o: Outcome) -> dict[str, Any]:
    """One turn as ``--save-answers`` keeps it: the whole answer, for reading by hand."""
    made, weak = o.model_citations
    return {
        "question": o.question,
        "gold": list(o.gold),
        "first": o.reply.sources[0].title if o.reply.sources else None,
        "status": o.reply.status,
        "notices": [notice.kind for notice in o.reply.notices],
        "cited_by": o.citing,
        "model_citations": made,
        "weak_citations": weak,
        "words": o.words,
        "answer": o.reply.body,
    }


def _shares_words(topic: str, question: str) -> bool:
    theirs = {w.lower() for w in _WORD.findall(question) if len(w) > 3}
    return any(w.lower() in theirs for w in _WORD.findall(topic))


async def run(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    keywords = KeywordLog()
    outcomes = await collect(args, keywords)
    if args.save_keywords:
        args.save_keywords.write_text(json.dumps(keywords.replies, indent=1) + "\n", "utf-8")
    if args.save_answers:
        answers = [answer_record(o) for o in outcomes]
        args.save_answers.write_text(json.dumps(answers, indent=1) + "\n", "utf-8")
    print()
    report(outcomes, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="the model server's base URL")
    parser.add_argument("--provider", choices=("ollama", "openai"), default="ollama")
    parser.add_argument("--model", default="llama3.2")
    parser.add_argument(
        "--turns", type=int, default=0, help="run only the first N labelled turns (0: all 67)"
    )
    parser.add_argument(
        "--backend", choices=("sentence-transformers", "hashing"), default="sentence-transformers"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every turn")
    parser.add_argument(
        "--save-keywords", type=Path, metavar="FILE", help="write the keyword replies (JSON)"
    )
    parser.add_argument(
        "--save-answers",
        type=Path,
        metavar="FILE",
        help="write every turn's whole answer, status and notices (JSON)",
    )
    parser.add_argument(
        "--replay-keywords",
        type=Path,
        metavar="FILE",
        help="no model: replay these keyword replies, script the rest",
    )
    args = parser.parse_args()
    if not (args.base_url or args.replay_keywords):
        parser.error("--base-url is required (or --replay-keywords FILE)")
    try:
        asyncio.run(run(args))
    except NotReady as error:
        sys.exit(f"bench/real_model.py: the model server is not ready: {error}")


if __name__ == "__main__":
    main()
