"""``[llm].provider``: the configuration, each provider's start-up check, error translation
and per-call options, against the fake servers with the real clients; and the one command
that tries the bot against another server (``LLM_PROVIDER``, ``LLM_BASE_URL``,
``LLM_MODEL``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from bot import pull_model
from bot.adapters.inmemory import InMemoryAdapter
from bot.config import OPENAI_COMPATIBLE_URL, LLMSettings, Secret, Settings, load_settings
from bot.errors import ConfigError, LLMError, LLMUnavailable, ModelNotFound
from bot.pipeline.llm import (
    build_chat_model,
    check_llm,
    close_chat_model,
    complete_llm,
    provider_for,
)
from bot.pipeline.prompts import TOPIC_MARKER
from bot.runtime import Runtime
from tests.fakes.base import Fault
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI
from tests.fakes.scripted import requested_schema
from tests.test_cli import bot, child_env

SCHEMA: dict[str, Any] = {
    "title": "search keywords",
    "type": "object",
    "properties": {"keywords": {"type": "array", "items": {"type": "string"}}},
    "required": ["keywords"],
}


def openai_settings(fake: FakeOpenAI, **changes: Any) -> LLMSettings:
    return dataclasses.replace(
        LLMSettings(provider="openai", base_url=fake.base_url, model="llama3.2"), **changes
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def models() -> AsyncIterator[list[tuple[BaseChatModel, LLMSettings]]]:
    """Chat models a test built; closed (and checked closed) afterwards."""
    made: list[tuple[BaseChatModel, LLMSettings]] = []
    yield made
    for llm, settings in made:
        await close_chat_model(llm, settings)


Build = Callable[[LLMSettings], BaseChatModel]


@pytest.fixture
def build(models: list[tuple[BaseChatModel, LLMSettings]]) -> Build:
    def make(settings: LLMSettings) -> BaseChatModel:
        llm = build_chat_model(settings)
        models.append((llm, settings))
        return llm

    return make


async def ask(llm: BaseChatModel, settings: LLMSettings, question: str = "hi there") -> str:
    """One call through the pipeline's own door (deadlines, error translation)."""

    async def texts() -> AsyncIterator[str]:
        async for chunk in llm.astream(question):
            yield chunk.text

    return await complete_llm(texts(), settings)


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_ollama_stays_the_default(tmp_path: Path) -> None:
    llm = load_settings(write(tmp_path, ""), env={}).llm
    assert (llm.provider, llm.base_url, llm.api_key) == ("ollama", "http://localhost:11434", None)


def test_openai_without_a_url_gets_the_usual_local_one(tmp_path: Path) -> None:
    llm = load_settings(write(tmp_path, '[llm]\nprovider = "openai"\n'), env={}).llm
    assert (llm.provider, llm.base_url) == ("openai", OPENAI_COMPATIBLE_URL)
    with pytest.raises(ConfigError, match=r"\[llm\].provider must be one of 'ollama', 'openai'"):
        load_settings(write(tmp_path, '[llm]\nprovider = "vllm"\n'), env={})


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[llm]\napi_key = "sk-1"\n', "[llm].api_key"),
        ('[llm]\nOPENAI_API_KEY = "sk-1"\n', "[llm].OPENAI_API_KEY"),
        ('openai_api_key = "sk-1"\n', "openai_api_key"),
    ],
)
def test_a_key_in_the_file_is_refused_naming_the_variable(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    message = str(caught.value)
    assert message.startswith(f"{named} does not belong in config.toml")
    assert "OPENAI_API_KEY environment variable" in message and "sk-1" not in message


def test_the_key_comes_from_the_environment_and_stays_hidden(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), env={"OPENAI_API_KEY": " sk-secret "})
    assert settings.llm.api_key is not None and settings.llm.api_key.reveal() == "sk-secret"
    assert "sk-secret" not in repr(settings)


def test_the_key_may_come_from_a_file_as_docker_secrets_give_it(tmp_path: Path) -> None:
    secret = tmp_path / "openai_api_key"
    secret.write_text("sk-from-file\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, ""), env={"OPENAI_API_KEY_FILE": str(secret)})
    assert settings.llm.api_key is not None and settings.llm.api_key.reveal() == "sk-from-file"


def test_one_command_switches_provider_url_and_model(tmp_path: Path) -> None:
    config = write(tmp_path, '[llm]\nbase_url = "http://gpu:11434"\nmodel = "llama3.2"\n')
    env = {
        "LLM_PROVIDER": "openai",
        "LLM_BASE_URL": "http://localhost:8080/v1/",
        "LLM_MODEL": "smollm2",
        "OLLAMA_HOST": "elsewhere",
    }
    llm = load_settings(config, env=env).llm
    assert (llm.provider, llm.base_url, llm.model) == (
        "openai",
        "http://localhost:8080/v1",
        "smollm2",
    )
    # OLLAMA_HOST is Ollama's: exported for Ollama, it must not redirect another server.
    llm = load_settings(config, env={"LLM_PROVIDER": "openai", "OLLAMA_HOST": "elsewhere"}).llm
    assert llm.base_url == "http://gpu:11434"
    assert load_settings(write(tmp_path, ""), env={"LLM_PROVIDER": "openai"}).llm.base_url == (
        OPENAI_COMPATIBLE_URL
    )
    # For Ollama it still counts, and LLM_BASE_URL wins over it.
    assert load_settings(config, env={"OLLAMA_HOST": "box"}).llm.base_url == "http://box:11434"
    both = {"OLLAMA_HOST": "box", "LLM_BASE_URL": "http://other:1"}
    assert load_settings(config, env=both).llm.base_url == "http://other:1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LLM_PROVIDER": "vllm"}, "LLM_PROVIDER must be 'ollama' or 'openai', not 'vllm'"),
        ({"LLM_BASE_URL": "localhost:8080"}, "LLM_BASE_URL must be an http(s) URL"),
    ],
)
def test_a_bad_override_is_a_config_error(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings(write(tmp_path, ""), env=env)


# ---------------------------------------------------------------------------------------
# Start-up checks
# ---------------------------------------------------------------------------------------


async def test_the_openai_check_passes_when_the_model_is_served(
    http: aiohttp.ClientSession, openai_server: FakeOpenAI
) -> None:
    assert await check_llm(http, openai_settings(openai_server)) is None
    [request] = openai_server.requests_to("/v1/models")
    assert request.headers["Authorization"] == "Bearer no-key"


async def test_the_openai_check_names_each_fix(
    http: aiohttp.ClientSession, openai_server: FakeOpenAI
) -> None:
    missing = await check_llm(http, openai_settings(openai_server, model="mistral"))
    assert missing == (
        f"The model 'mistral' is not served at {openai_server.base_url} (it serves: "
        "llama3.2): start your server with it, or set [llm].model (answers will list "
        "sources only until then)."
    )
    no_v1 = await check_llm(http, openai_settings(openai_server, base_url=openai_server.url))
    assert no_v1 == (
        f"The server at {openai_server.url} serves its OpenAI-compatible API under /v1: set "
        f"[llm].base_url to {openai_server.url}/v1 (answers will list sources only until then)."
    )
    elsewhere = await check_llm(
        http, openai_settings(openai_server, base_url=f"{openai_server.url}/api")
    )
    assert elsewhere is not None and "usually ends in /v1" in elsewhere
    assert "HTTP 404" in elsewhere
    openai_server.api_key = "sk-right"
    refused = await check_llm(http, openai_settings(openai_server))
    assert refused is not None and "set OPENAI_API_KEY" in refused
    assert await check_llm(http, openai_settings(openai_server, api_key=Secret("sk-right"))) is None
    url = openai_server.base_url
    await openai_server.close()
    down = await check_llm(http, openai_settings(openai_server, base_url=url))
    assert down is not None and down.startswith(
        f"No OpenAI-compatible server is reachable at {url}"
    )
    assert "vllm serve" in down and "set [llm].base_url" in down


async def test_the_ollama_check_is_unchanged(
    http: aiohttp.ClientSession, ollama: FakeOllama
) -> None:
    settings = LLMSettings(base_url=ollama.url)
    assert await check_llm(http, settings) is None
    missing = await check_llm(http, dataclasses.replace(settings, model="mistral"))
    assert missing is not None and "ollama pull mistral" in missing


# ---------------------------------------------------------------------------------------
# Errors, as the pipeline sees them
# ---------------------------------------------------------------------------------------


async def test_openai_errors_become_llm_errors_with_the_right_fix(
    openai_server: FakeOpenAI, build: Build
) -> None:
    settings = openai_settings(openai_server)
    llm = build(settings)
    assert await ask(llm, settings) == "hi there"

    missing = openai_settings(openai_server, model="mistral")
    with pytest.raises(ModelNotFound) as not_found:
        await ask(build(missing), missing)
    assert "start your server with it" in not_found.value.hint
    assert "[llm].model" in not_found.value.hint

    before = len(openai_server.requests_to("/v1/chat/completions"))
    openai_server.rate_limit(times=None, retry_after_s=0.01)
    with pytest.raises(LLMUnavailable) as limited:
        await ask(llm, settings)
    assert "rate limiting" in limited.value.hint and "429" in limited.value.hint
    # One retry, after the server's retry-after, then the error.
    assert len(openai_server.requests_to("/v1/chat/completions")) == before + 2
    openai_server.reset_faults()

    openai_server.fail_midstream(after_chunks=1)
    with pytest.raises(LLMUnavailable) as broken:
        await ask(llm, settings, "a longer reply")
    assert broken.value.hint.startswith("The language model returned an error")

    openai_server.always_fail = Fault.garbage()
    with pytest.raises(LLMUnavailable) as garbage:
        await ask(llm, settings)
    assert "could not read" in garbage.value.hint and "/v1" in garbage.value.hint
    openai_server.reset_faults()

    openai_server.api_key = "sk-right"
    with pytest.raises(LLMUnavailable) as refused:
        await ask(llm, settings)
    assert "OPENAI_API_KEY" in refused.value.hint


async def test_a_url_without_the_api_and_a_server_that_is_down(
    openai_server: FakeOpenAI, build: Build
) -> None:
    root = openai_settings(openai_server, base_url=openai_server.url)  # no /v1
    with pytest.raises(LLMUnavailable) as no_api:
        await ask(build(root), root)
    assert "no chat completions API" in no_api.value.hint and "/v1" in no_api.value.hint
    url = openai_server.base_url
    await openai_server.close()
    down = openai_settings(openai_server, base_url=url)
    with pytest.raises(LLMUnavailable) as unreachable:
        await ask(build(down), down)
    assert "not reachable" in unreachable.value.hint
    assert "[llm].base_url" in unreachable.value.hint


async def test_a_server_that_stops_answering_is_a_timeout(
    openai_server: FakeOpenAI, build: Build
) -> None:
    settings = openai_settings(openai_server, timeout_s=1.0)
    openai_server.always_fail = Fault.hang()
    with pytest.raises(LLMError) as caught:
        await ask(build(settings), settings)
    assert "did not answer within 1 s" in caught.value.hint


# ---------------------------------------------------------------------------------------
# The key, and per-call options on the wire
# ---------------------------------------------------------------------------------------


async def test_the_model_sends_the_key_max_tokens_and_temperature(
    openai_server: FakeOpenAI, build: Build
) -> None:
    settings = openai_settings(openai_server, api_key=Secret("sk-abc"), max_tokens=64)
    openai_server.api_key = "sk-abc"
    await ask(build(settings), settings)
    [request] = openai_server.requests_to("/v1/chat/completions")
    assert request.headers["Authorization"] == "Bearer sk-abc"
    body = request.json()
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body
    assert body["temperature"] == settings.temperature and body["stream"] is True


async def test_openai_bind_options_limit_tokens_and_ask_for_a_schema(
    openai_server: FakeOpenAI, build: Build
) -> None:
    settings = openai_settings(openai_server)
    provider = provider_for(settings)
    assert provider.bind_options() == {}
    openai_server.honours_format = False  # the reply as written shows where the cut fell
    llm = build(settings).bind(**provider.bind_options(max_tokens=3, json_schema=SCHEMA))
    chunks: list[BaseMessage] = [c async for c in llm.astream("one two three four five")]
    assert "".join(c.text for c in chunks) == "one two three"
    assert [provider.finish_reason(c) for c in chunks if provider.finish_reason(c)] == ["length"]
    body = openai_server.chat_bodies()[-1]
    assert body["max_tokens"] == 3 and requested_schema(body) == SCHEMA
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "search_keywords", "schema": SCHEMA},
    }
    # The schema alone keeps the model's own limit; a whole reply finishes with "stop".
    plain = build(settings).bind(**provider.bind_options(json_schema=SCHEMA))
    chunks = [c async for c in plain.astream("short")]
    assert [provider.finish_reason(c) for c in chunks if provider.finish_reason(c)] == ["stop"]
    assert openai_server.chat_bodies()[-1]["max_tokens"] == settings.max_tokens
    assert requested_schema({"response_format": {"type": "json_object"}}) is None


async def test_ollama_bind_options_send_num_predict_and_format(
    ollama: FakeOllama, build: Build
) -> None:
    ollama.honours_format = False  # what is sent is the point here, not the grammar
    settings = LLMSettings(base_url=ollama.url, context_tokens=2048, temperature=0.3)
    provider = provider_for(settings)
    assert provider.bind_options() == {}
    llm = build(settings).bind(**provider.bind_options(max_tokens=5, json_schema=SCHEMA))
    chunks: list[BaseMessage] = [c async for c in llm.astream("hello")]
    assert "".join(c.text for c in chunks) == "hello"
    assert [provider.finish_reason(c) for c in chunks if provider.finish_reason(c)] == ["stop"]
    body = ollama.chat_bodies()[-1]
    assert body["options"] == {"temperature": 0.3, "num_predict": 5, "num_ctx": 2048}
    assert body["format"] == SCHEMA and requested_schema(body) == SCHEMA
    assert requested_schema({"format": "json"}) is None


async def test_close_closes_the_openai_clients(openai_server: FakeOpenAI) -> None:
    settings = openai_settings(openai_server)
    llm = build_chat_model(settings)
    await ask(llm, settings)
    await close_chat_model(llm, settings)
    assert llm.root_async_client.is_closed() and llm.root_client.is_closed()  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------
# Trying it without Ollama: one command
# ---------------------------------------------------------------------------------------


async def test_the_environment_points_one_command_at_an_openai_compatible_server(
    write_config: Callable[..., Path], ollama: FakeOllama
) -> None:
    async with FakeOpenAI(models=["smollm2"]) as server:
        env = child_env(LLM_PROVIDER="openai", LLM_BASE_URL=server.base_url, LLM_MODEL="smollm2")
        run = await bot("ask", "--config", str(write_config()), "--json", "What is BERT?", env=env)
        assert run.code == 0, run.err
        answer = json.loads(run.out)
        assert answer["status"] == "answered", run.err
        assert answer["sources"] and "[1]" in answer["body"]
        bodies = server.chat_bodies()
    assert len(bodies) == 2 and {b["model"] for b in bodies} == {"smollm2"}
    assert ollama.requests == [], "the file's Ollama is not asked at all"


async def test_pull_model_has_nothing_to_pull_from_an_openai_compatible_server(
    tmp_path: Path, openai_server: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, f'[llm]\nprovider = "openai"\nbase_url = "{openai_server.base_url}"\n')
    assert pull_model.main(["--config", str(config)]) == 0
    assert "nothing to pull" in capsys.readouterr().out
    assert openai_server.requests == []


@pytest.mark.parametrize("llm_provider", ["openai"])
async def test_a_server_that_refuses_the_keyword_schema_still_gets_keywords(
    make_settings: Callable[..., Settings],
    openai_server: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # llama-cpp-python's server answers response_format json_schema with a 500.
    openai_server.json_schema_supported = False
    question = "What is the transformer architecture in deep learning?"
    async with await Runtime.start(make_settings()) as runtime:
        bot = InMemoryAdapter()
        await runtime.add_adapter(bot)
        replies = [await bot.ask(question, channel=f"c{n}") for n in range(3)]

    for reply in replies:
        assert reply.status == "answered", reply.notices
        assert "transformer" in " ".join(reply.topics).lower()
    keyword_calls = [
        body
        for body in openai_server.chat_bodies()
        if TOPIC_MARKER in body["messages"][0]["content"]
    ]
    asked = ["response_format" in body for body in keyword_calls]
    assert asked[-1] is False, "the third turn asks without the schema at once"
    assert asked.count(False) == 3, "one plain keyword call per turn"
    stopped = [r for r in caplog.records if "refused the keyword call's JSON schema" in r.message]
    assert len(stopped) == 1, "said once, after two refusals in a row"
