"""The real ``ChatOpenAI`` (and ``openai.AsyncOpenAI``) against :class:`FakeOpenAI`.

The fake must speak OpenAI's wire format closely enough for the SDK's own parsers, and
answer the pipeline's prompts exactly as the fake Ollama does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, cast

import httpx
import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.prompts import ChatPromptTemplate
from langchain_ollama import ChatOllama
from langchain_openai import ChatOpenAI

from bot.contract import Source
from bot.pipeline.prompts import SUMMARY_PROMPT, SYNTHESIS_PROMPT, TOPIC_PROMPT, format_history
from bot.pipeline.prompts import format_sources as sources_text
from tests.fakes.base import Fault
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import BUSY_ERROR, FakeOpenAI
from tests.fakes.scripted import prompt_tokens, split_tokens

MODEL = "llama3.2"
MakeLLM = Callable[..., ChatOpenAI]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(models=[MODEL, "smollm2"]) as server:
        yield server


@pytest.fixture
async def make_llm(fake: FakeOpenAI) -> AsyncIterator[MakeLLM]:
    """Build ``ChatOpenAI`` clients for the fake (no retries) and close them afterwards.

    Each gets HTTP clients of its own: langchain-openai's default is one cached per base
    URL, so closing it here would hand a closed client to a later test whose fake happens
    to get the same ephemeral port.
    """
    made: list[ChatOpenAI] = []

    def make(**kwargs: Any) -> ChatOpenAI:
        kwargs.setdefault("base_url", fake.base_url)
        kwargs.setdefault("model", MODEL)
        kwargs.setdefault("api_key", "sk-test")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("http_client", openai.DefaultHttpxClient())
        kwargs.setdefault("http_async_client", openai.DefaultAsyncHttpxClient())
        llm = ChatOpenAI(**kwargs)
        made.append(llm)
        return llm

    yield make
    for llm in made:
        await llm.root_async_client.close()
        llm.root_client.close()


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0) as sdk:
        yield sdk


def events(body: bytes) -> list[str]:
    """The ``data:`` payloads of a server-sent event stream, in order."""
    return [line.removeprefix("data: ") for line in body.decode().split("\n\n") if line.strip()]


# ---------------------------------------------------------------------------------------
# The wire format
# ---------------------------------------------------------------------------------------


async def test_a_stream_is_openai_shaped_events_ending_in_done(fake: FakeOpenAI) -> None:
    fake.responder = lambda body: ["Hel", "lo"]
    request = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        response = await http.post("/chat/completions", json=request)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    raw = events(response.content)
    assert raw[-1] == "[DONE]"
    chunks = [json.loads(data) for data in raw[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert all("usage" not in c for c in chunks), "usage only when asked for"


async def test_a_whole_completion_and_its_usage(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "whole reply"}]
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "whole reply"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(split_tokens("whole reply"))


async def test_models_are_listed_and_fetched(client: openai.AsyncOpenAI) -> None:
    listed = [model.id async for model in client.models.list()]
    assert listed == [MODEL, "smollm2"]
    assert (await client.models.retrieve("smollm2")).owned_by == "fake"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("mistral")


# ---------------------------------------------------------------------------------------
# ChatOpenAI over the wire
# ---------------------------------------------------------------------------------------


async def test_astream_yields_the_responder_chunks_and_the_finish_reason(
    fake: FakeOpenAI, make_llm: MakeLLM
) -> None:
    fake.responder = lambda body: ["Hel", "lo", " world"]
    chunks = [chunk async for chunk in make_llm(stream_usage=True).astream("hi")]
    assert [c.text for c in chunks if c.text] == ["Hel", "lo", " world"]
    reasons = [c.response_metadata.get("finish_reason") for c in chunks]
    assert [r for r in reasons if r] == ["stop"]
    [usage] = [c.usage_metadata for c in chunks if c.usage_metadata]
    [body] = fake.chat_bodies()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert usage["output_tokens"] == 3 and usage["input_tokens"] == prompt_tokens(body)
    assert fake.replies == ["Hello world"]


async def test_max_tokens_cuts_the_reply_with_finish_reason_length(
    fake: FakeOpenAI, make_llm: MakeLLM
) -> None:
    chunks = [c async for c in make_llm(max_tokens=2).astream("one two three four")]
    assert "".join(c.text for c in chunks) == "one two"
    assert [
        c.response_metadata.get("finish_reason")
        for c in chunks
        if c.response_metadata.get("finish_reason")
    ] == ["length"]
    assert fake.chat_bodies()[0]["max_completion_tokens"] == 2


async def test_the_request_body(fake: FakeOpenAI, make_llm: MakeLLM) -> None:
    await make_llm(temperature=0.2).ainvoke([("system", "be brief"), ("human", "why?")])
    [request] = fake.requests_to("/v1/chat/completions")
    assert request.headers["Authorization"] == "Bearer sk-test"
    body = request.json()
    assert body["model"] == MODEL and body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "why?"},
    ]


# ---------------------------------------------------------------------------------------
# The same answers as the fake Ollama
# ---------------------------------------------------------------------------------------

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
PROMPTS: list[tuple[ChatPromptTemplate, dict[str, str]]] = [
    (TOPIC_PROMPT, {"question": "What is the Rust programming language?", "context": ""}),
    (
        TOPIC_PROMPT,
        {
            "question": "And what about its successor?",
            "context": format_history([("What is Python 2?", "An old version [1].")]),
        },
    ),
    (
        SYNTHESIS_PROMPT,
        {
            "question": "What is Rust?",
            "summary": "",
            "history": "",
            "sources": sources_text(SOURCES),
            "analysis": "2 articles",
            "notes": "",
        },
    ),
    (
        SUMMARY_PROMPT,
        {
            "summary": "The user is learning languages.",
            "transcript": format_history([("What is Rust?", "A language [1].")]),
        },
    ),
]


@pytest.mark.parametrize(
    ("prompt", "variables"), PROMPTS, ids=["topic", "follow-up", "answer", "summary"]
)
async def test_the_pipeline_prompts_get_the_fake_ollamas_answers(
    make_llm: MakeLLM, prompt: ChatPromptTemplate, variables: dict[str, str]
) -> None:
    async with FakeOllama() as ollama_server:
        ollama_llm = ChatOllama(base_url=ollama_server.url, model=MODEL)
        try:
            expected = [c.text async for c in (prompt | ollama_llm).astream(variables)]
        finally:
            await ollama_llm._async_client.close()  # type: ignore[no-untyped-call]
            ollama_llm._client.close()  # type: ignore[no-untyped-call]
    got = [c.text async for c in (prompt | make_llm()).astream(variables)]
    assert [t for t in got if t] == [t for t in expected if t]
    assert len([t for t in got if t]) > 3


# ---------------------------------------------------------------------------------------
# Failures as the client sees them
# ---------------------------------------------------------------------------------------


async def test_an_unknown_model_is_openais_404(make_llm: MakeLLM) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await make_llm(model="mistral").ainvoke("hi")
    assert caught.value.status_code == 404
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "model_not_found"
    assert "`mistral` does not exist" in caught.value.body["message"]


async def test_a_429_carries_retry_after_and_the_sdk_waits_it_out(
    fake: FakeOpenAI, make_llm: MakeLLM
) -> None:
    fake.rate_limit(times=1, retry_after_s=0.05)
    assert (await make_llm(max_retries=1).ainvoke("hi")).text == "hi"
    first, second = fake.requests_to("/v1/chat/completions")
    assert first.body == second.body
    fake.rate_limit(times=None, retry_after_s=0.05)
    with pytest.raises(openai.RateLimitError) as caught:
        await make_llm().ainvoke("hi")
    assert caught.value.response.headers["retry-after"] == "0.05"
    assert (
        isinstance(caught.value.body, dict) and caught.value.body["code"] == "rate_limit_exceeded"
    )


async def test_server_errors(fake: FakeOpenAI, make_llm: MakeLLM) -> None:
    fake.server_busy()
    with pytest.raises(openai.InternalServerError) as caught:
        await make_llm().ainvoke("hi")
    assert caught.value.status_code == 503 and BUSY_ERROR in caught.value.message
    fake.faults.append(Fault.status(500))
    with pytest.raises(openai.InternalServerError):
        await make_llm().ainvoke("hi")
    assert (await make_llm().ainvoke("hi")).text == "hi"


async def test_an_error_event_midstream_raises_after_some_chunks(
    fake: FakeOpenAI, make_llm: MakeLLM
) -> None:
    fake.fail_midstream(after_chunks=2, error="model runner crashed")
    received: list[str] = []
    with pytest.raises(openai.APIError, match="model runner crashed"):
        async for chunk in make_llm().astream("a reply long enough to have chunks"):
            received.append(chunk.text)
    assert [t for t in received if t] == split_tokens("a reply long enough to have chunks")[:2]
    assert (await make_llm().ainvoke("again")).text == "again"


async def test_a_responder_raising_midstream_is_an_error_event(
    fake: FakeOpenAI, make_llm: MakeLLM
) -> None:
    def broken(body: dict[str, Any]) -> Iterator[str]:
        yield "partial"
        raise RuntimeError("CUDA out of memory")

    fake.responder = broken
    with pytest.raises(openai.APIError, match="CUDA out of memory"):
        await make_llm().ainvoke("hi")


async def test_a_wrong_key_is_a_401(fake: FakeOpenAI, make_llm: MakeLLM) -> None:
    fake.api_key = "sk-right"
    with pytest.raises(openai.AuthenticationError):
        await make_llm(api_key="sk-wrong").ainvoke("hi")
    assert (await make_llm(api_key="sk-right").ainvoke("hi")).text == "hi"


@pytest.mark.parametrize(
    "response_format",
    [{"type": "json_schema", "json_schema": {"name": "x"}}, {"type": "yaml"}],
)
async def test_a_bad_response_format_is_a_400(
    client: openai.AsyncOpenAI, response_format: dict[str, Any]
) -> None:
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"response_format": response_format},
        )


async def test_a_json_schema_is_honoured_and_a_server_may_ignore_it(
    fake: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    schema = {
        "type": "object",
        "properties": {"keywords": {"type": "array", "items": {"type": "string"}}},
        "required": ["keywords"],
    }

    async def reply(response_format: dict[str, Any]) -> str:
        completion = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"response_format": response_format},
        )
        return completion.choices[0].message.content or ""

    wanted = {"type": "json_schema", "json_schema": {"name": "k", "schema": schema}}
    fake.responder = lambda body: '{"keywords": ["Mercury"]}'
    assert await reply(wanted) == '{"keywords": ["Mercury"]}'
    fake.responder = lambda body: "The answer is Mercury."
    assert json.loads(await reply(wanted)) == {"keywords": ["The answer is Mercury."]}
    assert json.loads(await reply({"type": "json_object"})) == "The answer is Mercury."
    assert await reply({"type": "text"}) == "The answer is Mercury."
    fake.honours_format = False
    assert await reply(wanted) == "The answer is Mercury."


async def test_a_client_hanging_up_is_recorded(fake: FakeOpenAI, make_llm: MakeLLM) -> None:
    fake.chunk_delay_s = 0.01
    fake.responder = lambda body: ["tok "] * 500
    stream = cast(AsyncGenerator[AIMessageChunk, None], make_llm().astream("hi"))
    async with contextlib.aclosing(stream):
        async for chunk in stream:
            if chunk.text:
                break
    await asyncio.wait_for(fake.stream_aborted.wait(), timeout=5)
    assert fake.aborted_streams == 1
    assert fake.replies[0].count("tok") < 500


async def test_connection_refused_is_an_api_connection_error(make_llm: MakeLLM) -> None:
    closed = FakeOpenAI()
    await closed.start()
    url = closed.base_url
    await closed.close()
    with pytest.raises(openai.APIConnectionError):
        await make_llm(base_url=url).ainvoke("hi")
