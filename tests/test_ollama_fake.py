"""The real ``ChatOllama`` (and ``ollama.AsyncClient``) against :class:`FakeOllama`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, cast

import httpx
import ollama
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_ollama import ChatOllama

from bot.config import Settings
from bot.contract import Source
from bot.pipeline.answer_filter import AnswerFilter
from bot.pipeline.keywords import parse_keywords
from bot.pipeline.llm import call_options
from bot.pipeline.prompts import (
    SUMMARY_PROMPT,
    SYNTHESIS_PROMPT,
    TOPIC_PROMPT,
    format_history,
    format_sources,
)
from tests.fakes.base import Fault
from tests.fakes.ollama import (
    BUSY_ERROR,
    FakeOllama,
    derive_keywords,
    prompt_tokens,
    split_tokens,
)

MODEL = "llama3.2"
MakeLLM = Callable[..., ChatOllama]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama(models=[f"{MODEL}:latest", "qwen3:8b"]) as server:
        yield server


@pytest.fixture
async def make_llm(fake: FakeOllama) -> AsyncIterator[MakeLLM]:
    """Build ``ChatOllama`` clients for the fake and close their httpx clients afterwards."""
    made: list[ChatOllama] = []

    def make(**kwargs: Any) -> ChatOllama:
        kwargs.setdefault("base_url", fake.url)
        kwargs.setdefault("model", MODEL)
        llm = ChatOllama(**kwargs)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        # ollama's close() methods carry no annotations.
        await llm._async_client.close()  # type: ignore[no-untyped-call]
        llm._client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
async def client(fake: FakeOllama) -> AsyncIterator[ollama.AsyncClient]:
    async with ollama.AsyncClient(host=fake.url) as raw_client:
        yield raw_client


# ---------------------------------------------------------------------------------------
# ChatOllama over the wire
# ---------------------------------------------------------------------------------------


async def test_ainvoke_echoes_by_default(make_llm: MakeLLM) -> None:
    reply = await make_llm().ainvoke("hello there, fake model")
    assert reply.text == "hello there, fake model"
    assert reply.response_metadata["done_reason"] == "stop"
    assert reply.response_metadata["model_name"] == MODEL


async def test_astream_yields_the_responder_chunks_and_usage(
    fake: FakeOllama, make_llm: MakeLLM
) -> None:
    fake.responder = lambda body: ["Hel", "lo", " world"]
    chunks = [chunk async for chunk in make_llm().astream("hi")]
    assert [c.text for c in chunks if c.text] == ["Hel", "lo", " world"]
    [final] = [c for c in chunks if c.usage_metadata]  # from the fake's "done" line
    assert final.usage_metadata is not None
    [body] = fake.chat_bodies()
    assert final.usage_metadata["output_tokens"] == 3
    assert final.usage_metadata["input_tokens"] == prompt_tokens(body)
    assert final.usage_metadata["total_tokens"] == 3 + prompt_tokens(body)
    assert final.response_metadata["eval_count"] == 3
    assert fake.replies == ["Hello world"]


async def test_ainvoke_usage_metadata(fake: FakeOllama, make_llm: MakeLLM) -> None:
    fake.responder = lambda body: "one two three"
    reply = await make_llm().ainvoke("count")
    assert reply.text == "one two three"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == len(split_tokens("one two three"))
    assert reply.usage_metadata["input_tokens"] == 1
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(reply.response_metadata[key], int)


async def test_request_body_on_the_wire(fake: FakeOllama, make_llm: MakeLLM) -> None:
    llm = make_llm(temperature=0.2, num_predict=64, model=f"{MODEL}:latest")
    await llm.ainvoke([SystemMessage("be brief"), HumanMessage("why is the sky blue?")])
    [request] = fake.requests_to("/api/chat")
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json()
    assert body["stream"] is True
    assert body["model"] == f"{MODEL}:latest"
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "why is the sky blue?"},
    ]
    assert body["options"] == {"temperature": 0.2, "num_predict": 64}


# ---------------------------------------------------------------------------------------
# The default responder through the pipeline's prompts
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        (
            "What is the Rust programming language?",
            ["Rust programming language", "Rust", "programming"],
        ),
        ("Who founded Wikipedia?", ["Wikipedia"]),
        ("tell me about black holes", ["Black holes", "black", "holes"]),
    ],
)
async def test_topic_chain_gives_the_question_keywords(
    make_llm: MakeLLM, question: str, expected: list[str]
) -> None:
    reply = await (TOPIC_PROMPT | make_llm()).ainvoke({"question": question, "context": ""})
    assert reply.text.startswith("Sure!")  # messy on purpose
    assert parse_keywords(reply.text, question) == expected


async def test_topic_chain_resolves_follow_ups_from_context(make_llm: MakeLLM) -> None:
    context = format_history([("What is Python 2?", "Python 2 is an old version [1].")])
    reply = await (TOPIC_PROMPT | make_llm()).ainvoke(
        {"question": "And what about its successor?", "context": context}
    )
    keywords = parse_keywords(reply.text, "And what about its successor?")
    assert keywords == ["Python 2 successor", "Python 2", "successor"]


SOURCES = [
    (
        Source(1, "Rust (programming language)", "https://w/Rust", "wikipedia", 0.9),
        "Rust is a general-purpose programming language. It emphasizes performance.",
    ),
    (
        Source(2, "Rust 1.0 is out", "https://news.ycombinator.com/item?id=9", "hackernews", 0.6),
        "The first stable release shipped today. Upgrade now.",
    ),
]


async def test_synthesis_chain_streams_cited_answer_through_the_filter(
    fake: FakeOllama, make_llm: MakeLLM
) -> None:
    variables = {
        "question": "What is Rust?",
        "summary": "",
        "history": "",
        "sources": format_sources(SOURCES),
        "analysis": "2 articles",
        "notes": "",
    }
    answer_filter = AnswerFilter({1, 2})
    shown: list[str] = []
    pieces = 0
    async for chunk in (SYNTHESIS_PROMPT | make_llm()).astream(variables):
        pieces += 1
        shown.append(answer_filter.feed(chunk.text))
    shown.append(answer_filter.flush())
    answer = "".join(shown)
    assert pieces > 20  # streamed in small chunks
    assert '"Rust (programming language)"' in answer and '"Rust 1.0 is out"' in answer
    assert "Rust is a general-purpose programming language [1]." in answer
    assert "[2]" in answer
    assert "[9]" in fake.replies[-1] and "[9]" not in answer
    assert answer_filter.cited == [1, 2]


async def test_synthesis_without_sources_says_so(make_llm: MakeLLM) -> None:
    variables = dict.fromkeys(["summary", "history", "analysis", "notes"], "")
    variables |= {"question": "What is X?", "sources": format_sources([])}
    reply = await (SYNTHESIS_PROMPT | make_llm()).ainvoke(variables)
    assert "do not cover" in reply.text


async def test_summary_chain_mentions_the_topics(make_llm: MakeLLM) -> None:
    transcript = format_history(
        [("What is Rust?", "A language [1]."), ("Who founded Wikipedia?", "Jimmy Wales [1].")]
    )
    reply = await (SUMMARY_PROMPT | make_llm()).ainvoke(
        {"summary": "The user is learning languages.", "transcript": transcript}
    )
    assert reply.text == (
        "The user is learning languages. The user asked about Rust and Wikipedia."
    )


def test_default_responder_helpers() -> None:
    for text in ["", "Hello, world!  [1] x\n", "a [12]. b", "   "]:
        assert "".join(split_tokens(text)) == text
    assert split_tokens(" [1]") == [" [", "1", "]"]
    assert derive_keywords("what is it?") == ["What is it?"]
    assert derive_keywords("Who made it?", "User: What is Go?\nAssistant: A language.") == ["Go"]


# ---------------------------------------------------------------------------------------
# Failures as the client sees them
# ---------------------------------------------------------------------------------------


async def test_unknown_model_is_a_404_response_error(make_llm: MakeLLM) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        await make_llm(model="mistral").ainvoke("hi")
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "mistral" not found, try pulling it first'


async def test_midstream_error_raises_after_some_chunks(
    fake: FakeOllama, make_llm: MakeLLM
) -> None:
    fake.fail_midstream(after_chunks=2, error="model runner crashed")
    received: list[str] = []
    with pytest.raises(ollama.ResponseError, match="model runner crashed"):
        async for chunk in make_llm().astream("a reply long enough to have chunks"):
            received.append(chunk.text)
    assert received == split_tokens("a reply long enough to have chunks")[:2]
    # The fault was used up: the next request succeeds.
    assert (await make_llm().ainvoke("again")).text == "again"


async def test_responder_raising_midstream_is_an_error_line(
    fake: FakeOllama, make_llm: MakeLLM
) -> None:
    def broken(body: dict[str, Any]) -> Iterator[str]:
        yield "partial"
        raise RuntimeError("CUDA out of memory")

    fake.responder = broken
    with pytest.raises(ollama.ResponseError, match="CUDA out of memory"):
        await make_llm().ainvoke("hi")


async def test_server_busy_is_a_503(fake: FakeOllama, make_llm: MakeLLM) -> None:
    fake.server_busy(times=1)
    with pytest.raises(ollama.ResponseError) as caught:
        await make_llm().ainvoke("hi")
    assert caught.value.status_code == 503
    assert caught.value.error == BUSY_ERROR
    assert (await make_llm().ainvoke("hi")).text == "hi"


async def test_base_faults_apply(fake: FakeOllama, make_llm: MakeLLM) -> None:
    fake.faults.append(Fault.status(500))
    with pytest.raises(ollama.ResponseError) as caught:
        await make_llm().ainvoke("hi")
    assert caught.value.status_code == 500
    fake.faults.append(Fault.hang())
    with pytest.raises(httpx.ReadTimeout):
        await make_llm(client_kwargs={"timeout": 0.2}).ainvoke("hi")


async def test_connection_refused_is_httpx_connect_error(make_llm: MakeLLM) -> None:
    closed = FakeOllama()
    await closed.start()
    url = closed.url
    await closed.close()
    with pytest.raises(httpx.ConnectError):
        await make_llm(base_url=url).ainvoke("hi")


async def test_latency_and_chunk_delay(fake: FakeOllama, make_llm: MakeLLM) -> None:
    fake.latency_s = 0.05
    fake.chunk_delay_s = 0.02
    fake.responder = lambda body: ["a", "b", "c"]
    started = time.perf_counter()
    first_at = None
    async for _chunk in make_llm().astream("hi"):
        first_at = first_at or time.perf_counter() - started
    total = time.perf_counter() - started
    assert first_at is not None and first_at >= 0.05
    assert total >= 0.05 + 3 * 0.02  # three gaps: b, c and the final line


async def test_client_hang_up_is_recorded(fake: FakeOllama, make_llm: MakeLLM) -> None:
    fake.chunk_delay_s = 0.01
    fake.responder = lambda body: ["tok "] * 500
    # astream is an async generator; close it at once rather than when it is collected.
    stream = cast(AsyncGenerator[AIMessageChunk, None], make_llm().astream("hi"))
    async with contextlib.aclosing(stream):
        async for _chunk in stream:
            break
    await asyncio.wait_for(fake.stream_aborted.wait(), timeout=5)
    assert fake.aborted_streams == 1
    assert fake.replies[0].count("tok") < 500


async def test_close_ends_slow_streams_promptly() -> None:
    server = FakeOllama(chunk_delay_s=10)
    await server.start()
    async with ollama.AsyncClient(host=server.url) as raw_client:
        stream = await raw_client.chat(
            model="llama3.2", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
        first = await anext(stream)
        assert first.message.content == "a"
        started = time.perf_counter()
        await server.close()
        assert time.perf_counter() - started < 2
        with contextlib.suppress(httpx.HTTPError):
            async for _part in stream:
                pass
        await stream.aclose()


# ---------------------------------------------------------------------------------------
# The rest of the API, through the plain ollama client
# ---------------------------------------------------------------------------------------


async def test_non_streaming_chat(client: ollama.AsyncClient) -> None:
    response = await client.chat(
        model=MODEL, messages=[{"role": "user", "content": "whole reply"}], stream=False
    )
    assert response.message.role == "assistant"
    assert response.message.content == "whole reply"
    assert response.done is True and response.done_reason == "stop"
    assert response.eval_count == len(split_tokens("whole reply"))


async def test_generate_streams_response_fields(client: ollama.AsyncClient) -> None:
    parts = [part async for part in await client.generate(MODEL, "say this", stream=True)]
    assert "".join(p.response or "" for p in parts) == "say this"
    assert parts[-1].done is True and parts[-1].context == [1, 2, 3]


async def test_empty_chat_only_loads_the_model(client: ollama.AsyncClient) -> None:
    response = await client.chat(model=MODEL, messages=[], stream=False)
    assert response.done_reason == "load"


async def test_tags_show_ps_version(fake: FakeOllama, client: ollama.AsyncClient) -> None:
    listed = await client.list()
    assert [m.model for m in listed.models] == [f"{MODEL}:latest", "qwen3:8b"]
    assert listed.models[0].details is not None
    assert listed.models[0].details.quantization_level == "Q4_K_M"
    shown = await client.show(MODEL)
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo is not None and "general.architecture" in shown.modelinfo
    with pytest.raises(ollama.ResponseError) as caught:
        await client.show("nope")
    assert caught.value.status_code == 404
    assert [m.model for m in (await client.ps()).models] == [f"{MODEL}:latest", "qwen3:8b"]
    async with httpx.AsyncClient(base_url=fake.url) as http:
        assert (await http.get("/api/version")).json()["version"]
        assert (await http.get("/")).text == "Ollama is running"
        bad = await http.post("/api/chat", content=b"{not json")
        assert bad.status_code == 400 and "error" in bad.json()
        missing = await http.post("/api/chat", json={"messages": []})
        assert missing.json() == {"error": "model is required"}


# ---------------------------------------------------------------------------------------
# format: the grammar
# ---------------------------------------------------------------------------------------

KEYWORDS = {
    "type": "object",
    "properties": {"keywords": {"type": "array", "items": {"type": "string"}, "maxItems": 3}},
    "required": ["keywords"],
}


async def test_format_pours_any_reply_into_the_schema(fake: FakeOllama, make_llm: MakeLLM) -> None:
    fake.responder = lambda body: "Sure! Here they are:\n1. Mercury\n\n2. Venus\n3. Mars\n4. Earth"
    reply = await make_llm(format=KEYWORDS).ainvoke("keywords?")
    assert json.loads(reply.text) == {
        "keywords": ["Sure! Here they are:", "1. Mercury", "2. Venus"]
    }
    assert fake.chat_bodies()[0]["format"] == KEYWORDS


async def test_format_passes_json_of_the_right_shape_and_fixes_the_wrong_one(
    fake: FakeOllama, make_llm: MakeLLM
) -> None:
    llm = make_llm(format=KEYWORDS)
    fake.responder = lambda body: '{"keywords": ["Mercury", "Venus"]}'
    assert (await llm.ainvoke("q")).text == '{"keywords": ["Mercury", "Venus"]}'
    fake.responder = lambda body: '["Mercury"]'  # JSON, but not the schema's
    assert json.loads((await llm.ainvoke("q")).text) == {"keywords": ['["Mercury"]']}
    fake.responder = lambda body: ""
    assert json.loads((await llm.ainvoke("q")).text) == {"keywords": []}
    fake.responder = lambda body: "plain text"
    assert json.loads((await make_llm(format="json").ainvoke("q")).text) == "plain text"


async def test_a_server_that_ignores_format_replies_as_it_likes(
    fake: FakeOllama, make_llm: MakeLLM
) -> None:
    fake.honours_format = False
    fake.responder = lambda body: "1. Mercury"
    assert (await make_llm(format=KEYWORDS).ainvoke("q")).text == "1. Mercury"


async def test_call_options_reach_the_wire_with_the_model_s_own(
    fake: FakeOllama, make_llm: MakeLLM, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(llm={"temperature": 0.3, "context_tokens": 4096}).llm
    llm = make_llm(temperature=0.3, num_predict=1024, num_ctx=4096)
    fake.responder = lambda body: "Mercury"
    await llm.bind(**call_options(settings, max_tokens=64, json_schema=KEYWORDS)).ainvoke("q")
    await llm.bind(**call_options(settings)).ainvoke("q")
    keyword, answer = fake.chat_bodies()
    assert keyword["options"] == {"temperature": 0.3, "num_predict": 64, "num_ctx": 4096}
    assert keyword["format"] == KEYWORDS
    assert answer["options"] == {"temperature": 0.3, "num_predict": 1024, "num_ctx": 4096}
    assert "format" not in answer or not answer["format"]
