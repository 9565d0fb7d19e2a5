"""Settings: ``config.toml`` read once at start-up into frozen, typed objects.

Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the
key (``[llm].temperature must be between 0 and 2``), so a typo fails before anything
connects; every problem of the file and the environment is reported in one error, so a
file with three mistakes takes one run to fix, not three. Tokens never live in the file:
they come from environment variables, or from files those name (``DISCORD_TOKEN_FILE``, as
Docker secrets give them), and are wrapped in :class:`Secret`, whose ``repr`` hides them.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

from bot.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config.toml")
DEFAULT_USER_AGENT = (
    "research-agent/0.1 (https://github.com/research-agent/research-agent; "
    "set [sources].user_agent to your contact)"
)


def _between(low: float, high: float | None = None) -> dict[str, float | None]:
    return {"min": low, "max": high}


URL: dict[str, bool] = {"url": True}  # must be http(s)://host...
WS_URL: dict[str, bool] = {"ws_url": True}  # must be ws(s)://host...
NONEMPTY: dict[str, bool] = {"nonempty": True}
PATH: dict[str, bool] = {"path": True}  # must start with "/"
OLLAMA_PORT = 11434
OLLAMA_URL = "http://localhost:11434"
# vLLM's default (`vllm serve MODEL`); llama.cpp's server and LM Studio say theirs.
OPENAI_COMPATIBLE_URL = "http://localhost:8000/v1"
LLMProvider = Literal["ollama", "openai"]


@dataclass(frozen=True, slots=True)
class Secret:
    """A token from the environment; ``repr`` and ``str`` never show it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class LLMSettings:
    # "ollama", or "openai": any server of OpenAI's chat completions API (vLLM, llama.cpp's
    # server, LM Studio, a LiteLLM proxy), whose key comes from OPENAI_API_KEY only.
    provider: LLMProvider = "ollama"
    # Ollama's root, or the OpenAI-compatible API's root (usually ending in /v1); unset, it
    # is the chosen provider's usual local address.
    base_url: str = field(default=OLLAMA_URL, metadata=URL)
    model: str = field(default="llama3.2", metadata=NONEMPTY)
    temperature: float = field(default=0.2, metadata=_between(0, 2))
    # How long one read from the server may take (connecting fails after 5 s).
    timeout_s: float = field(default=120.0, metadata=_between(1, 3600))
    # A call must stream its first chunk within this, and finish within call_timeout_s: a
    # model that trickles a chunk every few seconds never trips the per-read timeout.
    first_token_timeout_s: float = field(default=60.0, metadata=_between(1, 3600))
    call_timeout_s: float = field(default=180.0, metadata=_between(1, 7200))
    # Sent as Ollama's num_ctx; 0 leaves the model's default. Ollama only: an
    # OpenAI-compatible server fixes its context when it starts (vLLM --max-model-len).
    context_tokens: int = field(default=0, metadata=_between(0, 1_000_000))
    # Sent as num_predict (Ollama) or max_tokens (an OpenAI-compatible server), and enforced
    # on the stream too (a server may ignore it): a model stuck in a loop must not hold a
    # conversation forever.
    max_tokens: int = field(default=1024, metadata=_between(16, 100_000))
    # The running summary's call: at most five sentences.
    summary_max_tokens: int = field(default=256, metadata=_between(16, 100_000))
    # OPENAI_API_KEY, for the "openai" provider; never from the file. A local server
    # needs none.
    api_key: Secret | None = None
    # The keyword call's own limit: a few keywords fit in a few dozen tokens, and a model
    # that answers the question instead must not spend the answer's budget doing it.
    keyword_max_tokens: int = field(default=64, metadata=_between(16, 1024))


@dataclass(frozen=True, slots=True)
class WikipediaSettings:
    enabled: bool = True
    # ``{language}`` is replaced by ``language``; a URL without it is used as is.
    api_url: str = field(default="https://{language}.wikipedia.org/w/api.php", metadata=URL)
    language: str = field(default="en", metadata=NONEMPTY)
    results_per_keyword: int = field(default=5, metadata=_between(1, 20))

    @property
    def endpoint(self) -> str:
        return self.api_url.replace("{language}", self.language)


@dataclass(frozen=True, slots=True)
class HackerNewsSettings:
    enabled: bool = True
    api_url: str = field(default="https://hn.algolia.com/api/v1", metadata=URL)
    results_per_keyword: int = field(default=3, metadata=_between(1, 50))


@dataclass(frozen=True, slots=True)
class SourcesSettings:
    user_agent: str = field(default=DEFAULT_USER_AGENT, metadata=NONEMPTY)
    timeout_s: float = field(default=8.0, metadata=_between(0.1, 120))
    retries: int = field(default=2, metadata=_between(0, 10))
    backoff_s: float = field(default=0.5, metadata=_between(0, 60))
    max_body_bytes: int = field(default=2_000_000, metadata=_between(1024))
    cache_ttl_s: float = field(default=300.0, metadata=_between(0, 86_400))
    cache_entries: int = field(default=256, metadata=_between(0, 100_000))
    max_article_chars: int = field(default=3000, metadata=_between(100, 100_000))
    wikipedia: WikipediaSettings = WikipediaSettings()
    hackernews: HackerNewsSettings = HackerNewsSettings()


@dataclass(frozen=True, slots=True)
class EmbeddingSettings:
    # "onnx": the same model exported to ONNX Runtime (pip install onnx onnxruntime).
    backend: Literal["sentence-transformers", "onnx", "hashing"] = "sentence-transformers"
    # "packaged": all-MiniLM-L6-v2 as installed with the bot (no download); else a hub name.
    model: str = field(default="packaged", metadata=NONEMPTY)
    # A local directory with the model's files; when set it wins over ``model``.
    model_path: str = ""
    workers: int = field(default=1, metadata=_between(1, 64))
    # Threads each worker computes with; 0: the process's usable cores divided among the
    # workers. Set it when several replicas share one machine's cores (their threads
    # would otherwise oversubscribe the cores: see the README's replica benchmark).
    threads: int = field(default=0, metadata=_between(0, 256))
    # An embedding call that takes longer is given up (the turn ranks without it) and its
    # workers are killed and replaced: a stopped or wedged worker must not hold turns.
    timeout_s: float = field(default=30.0, metadata=_between(0.5, 3600))
    batch_size: int = field(default=32, metadata=_between(1, 1024))
    hashing_dim: int = field(default=1024, metadata=_between(16, 1 << 20))
    # Vectors kept by (model, text hash): in memory, and in the memory database across
    # restarts (0 turns either off).
    cache_entries: int = field(default=4096, metadata=_between(0, 1_000_000))
    stored_cache_entries: int = field(default=50_000, metadata=_between(0, 10_000_000))
    # Tokens the model reads of each text; 0 keeps the model's own limit.
    max_seq_length: int = field(default=0, metadata=_between(0, 8192))
    # The onnx backend: int8 weights (dynamic quantisation), or false for fp32.
    onnx_quantize: bool = True


@dataclass(frozen=True, slots=True)
class RankingSettings:
    # How the dense, lexical and source-order scores are combined (bench/retrieval.py).
    fusion: Literal["rrf", "weighted"] = "rrf"
    # Hacker News stories may fill at most this share of any prefix of the ranking.
    hackernews_share: float = field(default=0.4, metadata=_between(0, 1))


@dataclass(frozen=True, slots=True)
class CitationSettings:
    # Compare each cited sentence with its source and mark weak citations ``[n?]``.
    check: bool = True
    # Below this similarity of a sentence to its source's best passage, a citation is weak
    # (bench/citations.py: 0.40 flags 59% of unsupported citations, 4.8% of supported ones).
    threshold: float = field(default=0.40, metadata=_between(-1, 1))
    # Give each sentence the model left uncited the source that supports it best, when that
    # support reaches attribution_threshold; renderings say these citations are the bot's.
    attribute: bool = True
    attribution_threshold: float = field(default=0.60, metadata=_between(-1, 1))


@dataclass(frozen=True, slots=True)
class MemorySettings:
    # An SQLite file (relative to the config file), or a postgresql:// URL that several
    # replicas share; DATABASE_URL in the environment overrides it (and holds the password).
    database: str = field(default="data/research-agent.db", metadata={"database": True})
    # Connections to a PostgreSQL server, at most, per replica.
    pool_size: int = field(default=10, metadata=_between(1, 500))
    # How long a replica's claim on a question (or a Discord shard) lasts unless it renews
    # it: how long the others wait before taking over the work of one that died.
    lease_s: float = field(default=30.0, metadata=_between(1, 3600))
    # Summarise once a conversation holds more than this many unsummarised messages.
    summarize_after: int = field(default=12, metadata=_between(2, 10_000))
    # Messages kept verbatim (not summarised) at the end of the history.
    keep_recent: int = field(default=6, metadata=_between(0, 10_000))


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    enabled: bool = True
    timeout_s: float = field(default=10.0, metadata=_between(0.1, 600))
    max_output_bytes: int = field(default=1_000_000, metadata=_between(1024))
    top_keywords: int = field(default=10, metadata=_between(1, 100))


@dataclass(frozen=True, slots=True)
class ChatSettings:
    max_question_chars: int = field(default=2000, metadata=_between(10, 100_000))
    max_sources_in_prompt: int = field(default=5, metadata=_between(1, 20))
    # The longest answer body; the model's stream is cut there, and the answer says so.
    max_answer_chars: int = field(default=6000, metadata=_between(200, 100_000))
    # The answer's length the prompt asks for, in words; [llm].max_tokens is the hard cap.
    answer_words: int = field(default=150, metadata=_between(20, 5000))
    # A whole turn, from its start to its answer: past it the user gets what was written
    # so far (or the sources), and the conversation moves on.
    turn_timeout_s: float = field(default=300.0, metadata=_between(5, 7200))


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    # Other bots' messages are ignored unless this is on (two bots can loop forever).
    respond_to_bots: bool = False
    # Questions per user: a steady rate and a burst; a platform's own setting wins.
    # 0 turns the limit off.
    rate_limit_per_minute: float = field(default=6.0, metadata=_between(0, 10_000))
    rate_limit_burst: int = field(default=3, metadata=_between(1, 1000))
    # Questions a crash left unanswered are answered at the next start when younger.
    inbox_max_age_s: float = field(default=3600.0, metadata=_between(0, 30 * 86_400))
    # At shutdown, turns in flight get this long to finish (docker stop waits 10 s).
    shutdown_grace_s: float = field(default=8.0, metadata=_between(0, 600))
    # A reply the platform refuses is retried at once this many times (with this backoff,
    # doubling); then it waits in the outbox and is retried until delivery_deadline_s is
    # up, across restarts.
    delivery_retries: int = field(default=3, metadata=_between(0, 20))
    delivery_backoff_s: float = field(default=0.5, metadata=_between(0, 60))
    delivery_deadline_s: float = field(default=900.0, metadata=_between(1, 7 * 86_400))


@dataclass(frozen=True, slots=True)
class DiscordSettings:
    """``[discord]``: used when ``DISCORD_TOKEN`` is set and ``enabled`` is on.

    Ids are Discord snowflakes, written as numbers or strings of digits.
    """

    enabled: bool = True
    # Every message in these channels is a question (no mention needed).
    research_channels: tuple[int, ...] = ()
    respond_to_dms: bool = True
    # Messages in a thread where the bot has answered are follow-ups, no mention needed.
    follow_up_in_threads: bool = True
    # A top-level question in a research channel gets a thread of its own for the answer.
    auto_thread: bool = False
    # Besides members with Manage Server, these may /reset.
    admin_role_ids: tuple[int, ...] = ()
    admin_user_ids: tuple[int, ...] = ()
    # Slash commands are synced to these guilds (instantly there); empty: globally.
    command_guild_ids: tuple[int, ...] = ()
    # None: the [intake] default; 0: no limit.
    rate_limit_per_minute: float | None = field(default=None, metadata=_between(0, 10_000))
    # Least time between two edits of one streaming reply (Discord allows ~5 per 5 s).
    edit_interval_s: float = field(default=1.2, metadata=_between(0.05, 60))
    # A REST or gateway proxy (large deployments), or a local fake (tests).
    api_url: str = field(default="https://discord.com/api/v10", metadata=URL)
    gateway_url: str = field(default="wss://gateway.discord.gg/", metadata=WS_URL)
    # Gateway shards (0: as many as Discord recommends). With a shared PostgreSQL store
    # the replicas divide them, each shard run by exactly one live replica.
    shard_count: int = field(default=0, metadata=_between(0, 4096))


@dataclass(frozen=True, slots=True)
class SlackSettings:
    # On when SLACK_BOT_TOKEN is set; false keeps Slack off even then.
    enabled: bool = True
    # "socket": Socket Mode over SLACK_APP_TOKEN, no public URL. "http": the Events API and
    # interactivity on one endpoint, verified with SLACK_SIGNING_SECRET.
    mode: Literal["socket", "http"] = "socket"
    http_host: str = field(default="0.0.0.0", metadata=NONEMPTY)
    # 0 picks a free port (tests); Slack needs a fixed one behind the load balancer.
    http_port: int = field(default=3000, metadata=_between(0, 65_535))
    http_path: str = field(default="/slack/events", metadata=PATH)
    # Answer later messages in a thread the bot answered in, without a new mention.
    follow_up_in_threads: bool = True
    respond_to_dms: bool = True
    # Slack user ids that may reset conversations, besides workspace admins and owners.
    admin_user_ids: tuple[str, ...] = ()
    # Questions per minute per user here; unset means [intake].rate_limit_per_minute.
    rate_limit_per_minute: float | None = field(default=None, metadata=_between(0, 10_000))
    # Keep the trailing slash: the SDK joins method names onto it.
    api_url: str = field(default="https://slack.com/api/", metadata=URL)


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    # The terminal is the user's chat window, so records go to this file; `-v` echoes
    # them to stderr as well.
    file: str = "data/research-agent.log"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """``[metrics]``: /healthz, /readyz and /metrics over HTTP (port 0 serves nothing)."""

    port: int = field(default=0, metadata=_between(0, 65_535))
    # Probes come from outside the container (an orchestrator, Prometheus).
    host: str = field(default="0.0.0.0", metadata=NONEMPTY)


@dataclass(frozen=True, slots=True)
class Settings:
    llm: LLMSettings = LLMSettings()
    sources: SourcesSettings = SourcesSettings()
    embeddings: EmbeddingSettings = EmbeddingSettings()
    ranking: RankingSettings = RankingSettings()
    citations: CitationSettings = CitationSettings()
    memory: MemorySettings = MemorySettings()
    analysis: AnalysisSettings = AnalysisSettings()
    chat: ChatSettings = ChatSettings()
    intake: IntakeSettings = IntakeSettings()
    discord: DiscordSettings = DiscordSettings()
    slack: SlackSettings = SlackSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    # Filled from the environment, never from the file.
    discord_token: Secret | None = None
    slack_bot_token: Secret | None = None
    slack_app_token: Secret | None = None
    slack_signing_secret: Secret | None = None
    # Keys this version no longer uses but still accepts, each with what to do instead;
    # the command line shows them and logs them once logging is set up.
    deprecations: tuple[str, ...] = ()


_ENV_ONLY = {"discord_token", "slack_bot_token", "slack_app_token", "slack_signing_secret"}
# The environment variables that hold secrets: each may instead be given as NAME_FILE, the
# path of a file holding the value (Docker and Compose secrets, the official images' way).
SECRET_VARIABLES = (
    "DISCORD_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "DATABASE_URL",
    "OPENAI_API_KEY",
)
# Not settable in the file: filled from the environment, or by the loader itself.
_NOT_IN_FILE = _ENV_ONLY | {"deprecations", "api_key"}
# Keys a release dropped, by section: still accepted (and ignored), with a warning that
# names the release and what replaces them.
_DROPPED: Mapping[tuple[str, str], str] = {
    ("embeddings", "top_k"): (
        "[embeddings].top_k is ignored since research-agent 0.2.0 (nothing used it: how many "
        "sources an answer draws on is [chat].max_sources_in_prompt); delete the line"
    ),
}
# Where each secret comes from, for the refusal of a token written into the file.
ENV_VARIABLES = {name: name.upper() for name in _ENV_ONLY} | {"openai_api_key": "OPENAI_API_KEY"}
# The short names a token gets under its platform's table (``[discord] token = "..."``).
_SECTION_TOKENS: Mapping[str, Mapping[str, str]] = {
    "discord": {"token": "DISCORD_TOKEN", "bot_token": "DISCORD_TOKEN"},
    "slack": {
        "token": "SLACK_BOT_TOKEN",
        "bot_token": "SLACK_BOT_TOKEN",
        "app_token": "SLACK_APP_TOKEN",
        "signing_secret": "SLACK_SIGNING_SECRET",
    },
    "llm": {"api_key": "OPENAI_API_KEY"},
}
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Problem:
    """One thing wrong with the configuration; ``key`` is where (``memory.keep_recent``)."""

    key: str
    message: str


class _Problems(list[_Problem]):
    """The problems found so far; loading goes on past each one to find the rest."""

    def add(self, key: str, message: str) -> None:
        self.append(_Problem(key, message))

    def about(self, section: str) -> bool:
        return any(p.key == section or p.key.startswith(f"{section}.") for p in self)


def load_settings(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read ``path`` (default ``./config.toml``; a missing default file means defaults).

    ``env`` defaults to ``os.environ``: ``LLM_PROVIDER``, ``LLM_BASE_URL`` and
    ``LLM_MODEL`` override ``[llm]``'s ``provider``, ``base_url`` and ``model``;
    ``OLLAMA_HOST`` overrides ``[llm].base_url`` for Ollama (``LLM_BASE_URL`` wins);
    ``OPENAI_API_KEY`` is the OpenAI-compatible server's key;
    ``DATABASE_URL`` overrides ``[memory].database``,
    ``DISCORD_TOKEN``, ``SLACK_BOT_TOKEN``, ``SLACK_APP_TOKEN`` and ``SLACK_SIGNING_SECRET``
    fill the secrets.
    Relative paths in the file are resolved against the file's directory.

    Each secret may be given as ``NAME_FILE`` instead, a file holding it
    (:func:`env_secret`).

    Raises:
        ConfigError: unreadable file or TOML syntax error (alone: nothing else can be
            checked); else every unknown key, bad type or range, token in the file and bad
            environment variable, all in one error.
    """
    env = os.environ if env is None else env
    explicit = path is not None
    file = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    raw: dict[str, Any] = {}
    if file.exists() or explicit:
        try:
            raw = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {file} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {file} cannot be read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from exc
    problems = _Problems()
    _take_tokens(raw, file, problems)
    _refuse_database_password(raw, file, problems)

    deprecations = _drop_removed_keys(raw)
    settings = dataclasses.replace(_build(Settings, raw, "", problems), deprecations=deprecations)
    if not problems.about("memory"):
        # Compared only when both values are the file's: a bad one was replaced by its
        # default, and comparing that would report a problem the file does not have.
        _check_together(settings, problems)
    llm_table = raw.get("llm")
    settings = _apply_llm_env(
        settings,
        env,
        problems,
        base_url_in_file=isinstance(llm_table, dict) and "base_url" in llm_table,
    )
    settings = _apply_env(settings, env, problems)
    if problems:
        raise ConfigError(*(problem.message for problem in problems))
    return _resolve_paths(settings, file.resolve().parent)


def config_report(exc: ConfigError) -> str:
    """What a command line prints for ``exc``: its one problem, or each numbered."""
    if len(exc.problems) <= 1:
        return f"Configuration error: {exc}"
    numbered = "\n".join(f"  {n}. {problem}" for n, problem in enumerate(exc.problems, 1))
    return f"Configuration errors; {len(exc.problems)} problems to fix:\n{numbered}"


def _take_tokens(raw: dict[str, Any], file: Path, problems: _Problems) -> None:
    """Take every token out of the file's tables, each refused naming its variable.

    Both spellings count (``discord_token`` and ``DISCORD_TOKEN``), at the top level or in
    any table, and so do the short names under a platform's own table (``[discord] token``,
    ``[slack] app_token``): whoever pastes a token into the file should learn where it
    goes, not that the key is unknown.
    """
    tables = [("", raw), *((name, table) for name, table in raw.items() if isinstance(table, dict))]
    for where, table in tables:
        short = _SECTION_TOKENS.get(where, {})
        for key in list(table):
            name = ENV_VARIABLES.get(key.lower()) or short.get(key.lower())
            if name is None:
                continue
            del table[key]
            shown = f"[{where}].{key}" if where else key
            problems.add(
                f"{where}.{key}" if where else key,
                f"{shown} does not belong in {file.name}: tokens come from the environment; "
                f"remove it there and set the {name} environment variable instead (or "
                f"{name}_FILE, the path of a file holding it)",
            )


def _refuse_database_password(raw: Mapping[str, Any], file: Path, problems: _Problems) -> None:
    """A database password in the file is refused like a token: it belongs in DATABASE_URL."""
    memory = raw.get("memory")
    database = memory.get("database") if isinstance(memory, dict) else None
    if isinstance(database, str) and is_database_url(database) and _has_password(database):
        problems.add(
            "memory.database",
            f"[memory].database in {file.name} holds a password: passwords come from the "
            "environment; remove it there and set the DATABASE_URL environment variable "
            "to the whole URL instead",
        )


def is_database_url(database: str) -> bool:
    """Whether ``database`` names a PostgreSQL server (else it is an SQLite file)."""
    return database.startswith(("postgresql://", "postgres://"))


def _names_server(url: str) -> bool:
    # A host, or a Unix socket's directory in the query (postgresql:///db?host=/run/pg).
    parts = urlsplit(url)
    return bool(parts.hostname) or "host=" in parts.query.lower()


def _has_password(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.password) or "password=" in parts.query.lower()


def _drop_removed_keys(raw: dict[str, Any]) -> tuple[str, ...]:
    """Take the keys a release dropped out of ``raw``; what to tell the operator of each."""
    notes = []
    for (section, key), note in _DROPPED.items():
        table = raw.get(section)
        if isinstance(table, dict) and key in table:
            del table[key]
            notes.append(note)
    return tuple(notes)


def _check_together(settings: Settings, problems: _Problems) -> None:
    memory = settings.memory
    if memory.keep_recent >= memory.summarize_after:
        problems.add(
            "memory.keep_recent",
            f"[memory].keep_recent ({memory.keep_recent}) must be smaller than "
            f"[memory].summarize_after ({memory.summarize_after})",
        )


def ollama_url(host: str) -> str:
    """``OLLAMA_HOST`` as Ollama reads it: scheme defaults to http, port to 11434."""
    if "://" not in host:
        host = f"http://{host}"
    parts = urlsplit(host)
    if not parts.hostname:
        raise ConfigError(f"OLLAMA_HOST={host!r} names no host")
    if parts.port is None:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        port = 443 if parts.scheme == "https" else OLLAMA_PORT
        netloc = f"{userinfo}@{netloc}:{port}" if userinfo else f"{netloc}:{port}"
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts).rstrip("/")


def env_secret(name: str, env: Mapping[str, str]) -> str | None:
    """The secret ``name`` from the environment: its value, or the contents of the file
    ``NAME_FILE`` names (surrounding whitespace and the final newline removed), as Docker
    and Compose secrets give it; None when neither is set.

    Raises:
        ConfigError: both are set, or the file cannot be read, is not text, or is empty.
            The message names the variable and the path, never the secret.
    """
    value = env.get(name, "").strip()
    variable = f"{name}_FILE"
    path = env.get(variable, "").strip()
    if not path:
        return value or None
    if value:
        raise ConfigError(
            f"{name} and {variable} are both set; set only one of them ({variable} is the "
            "path of a file holding the value, as Docker secrets give it)"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{variable} names {path}, which cannot be read ({reason})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{variable} names {path}, which is not UTF-8 text") from None
    if not text.strip():
        raise ConfigError(f"{variable} names {path}, which is empty")
    return text.strip()


def _apply_llm_env(
    settings: Settings, env: Mapping[str, str], problems: _Problems, *, base_url_in_file: bool
) -> Settings:
    """``[llm]`` as the environment changes it, so one command tries another server.

    ``LLM_PROVIDER``, ``LLM_BASE_URL`` and ``LLM_MODEL`` override the file; ``OLLAMA_HOST``
    counts for Ollama only (a shell that exports it for Ollama must not redirect an
    OpenAI-compatible server), and ``LLM_BASE_URL`` wins over it. A provider chosen without
    a URL anywhere gets its usual local address.
    """
    llm = settings.llm
    provider = env.get("LLM_PROVIDER", "").strip().lower() or llm.provider
    if provider not in typing.get_args(LLMProvider):
        problems.add(
            "env.LLM_PROVIDER", f"LLM_PROVIDER must be 'ollama' or 'openai', not {provider!r}"
        )
        provider = llm.provider
    base_url = env.get("LLM_BASE_URL", "").strip().rstrip("/")
    parts = urlsplit(base_url)
    if base_url and (parts.scheme not in {"http", "https"} or not parts.netloc):
        problems.add(
            "env.LLM_BASE_URL",
            "LLM_BASE_URL must be an http(s) URL such as http://localhost:8080/v1, "
            f"not {base_url!r}",
        )
        base_url = ""
    host = env.get("OLLAMA_HOST", "").strip()
    if not base_url and provider == "ollama" and host:
        try:
            base_url = ollama_url(host)
        except ConfigError as exc:
            problems.add("env.OLLAMA_HOST", str(exc))
    if not base_url and not base_url_in_file:
        base_url = OLLAMA_URL if provider == "ollama" else OPENAI_COMPATIBLE_URL
    llm = dataclasses.replace(
        llm,
        provider=typing.cast(LLMProvider, provider),
        base_url=base_url or llm.base_url,
        model=env.get("LLM_MODEL", "").strip() or llm.model,
    )
    return dataclasses.replace(settings, llm=llm)


def _apply_env(settings: Settings, env: Mapping[str, str], problems: _Problems) -> Settings:
    secrets: dict[str, str | None] = {}
    for name in SECRET_VARIABLES:
        try:
            secrets[name] = env_secret(name, env)
        except ConfigError as exc:
            problems.add(f"env.{name}", str(exc))
            secrets[name] = None

    def secret(name: str) -> Secret | None:
        value = secrets[name]
        return Secret(value) if value else None

    database = secrets["DATABASE_URL"]
    if database:
        if not is_database_url(database) or not _names_server(database):
            problems.add(
                "env.DATABASE_URL",
                "DATABASE_URL must be a PostgreSQL URL such as "
                "postgresql://user:password@host:5432/dbname (an SQLite file is set with "
                "[memory].database)",
            )
        else:
            memory = dataclasses.replace(settings.memory, database=database)
            settings = dataclasses.replace(settings, memory=memory)
    llm = dataclasses.replace(settings.llm, api_key=secret("OPENAI_API_KEY"))
    return dataclasses.replace(
        settings,
        llm=llm,
        discord_token=secret("DISCORD_TOKEN"),
        slack_bot_token=secret("SLACK_BOT_TOKEN"),
        slack_app_token=secret("SLACK_APP_TOKEN"),
        slack_signing_secret=secret("SLACK_SIGNING_SECRET"),
    )


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    memory = settings.memory
    if (
        memory.database != ":memory:"
        and not is_database_url(memory.database)
        and not Path(memory.database).is_absolute()
    ):
        memory = dataclasses.replace(memory, database=str(base / memory.database))
    emb = settings.embeddings
    if emb.model_path and not Path(emb.model_path).is_absolute():
        emb = dataclasses.replace(emb, model_path=str(base / emb.model_path))
    log = settings.logging
    if log.file and not Path(log.file).is_absolute():
        log = dataclasses.replace(log, file=str(base / log.file))
    return dataclasses.replace(settings, memory=memory, embeddings=emb, logging=log)


def _build(cls: type[_T], table: object, where: str, problems: _Problems) -> _T:
    """Instantiate dataclass ``cls`` from a TOML table, checking every key.

    A key that is unknown or whose value is wrong goes to ``problems`` and keeps its
    default, so the keys after it are checked too.
    """
    label = f"[{where}]" if where else "the top level"
    if not isinstance(table, dict):
        problems.add(where, f"{label} must be a table")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    allowed = [name for name in fields if name not in _NOT_IN_FILE]
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{where}.{key}" if where else key
        if key not in allowed:
            problems.add(
                name, f"unknown key {key!r} in {label}; expected one of: {', '.join(allowed)}"
            )
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            values[key] = _build(hint, value, name, problems)
            continue
        try:
            values[key] = _check(hint, value, name, fields[key].metadata)
        except ConfigError as exc:
            problems.add(name, str(exc))
    return cls(**values)


def _check(hint: Any, value: Any, name: str, meta: Mapping[str, Any]) -> Any:
    shown = f"[{name.rsplit('.', 1)[0]}].{name.rsplit('.', 1)[-1]}" if "." in name else name
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(
                f"{shown} must be one of {', '.join(map(repr, choices))}, not {value!r}"
            )
        return value
    if origin in (types.UnionType, typing.Union):
        # ``X | None``: TOML has no null, so None is only ever the default.
        present = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(present) != 1 or present[0] not in (str, int, float, bool):
            raise ConfigError(f"{shown} cannot be set in the file")
        hint = present[0]
    if origin is tuple:
        if typing.get_args(hint)[0] is int:
            return _ids(value, shown)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{shown} must be a list of non-empty strings, not {value!r}")
        return tuple(value)
    # bool is an int in Python; a TOML ``true`` must not pass as a number.
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value)
    elif hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{shown} must be true or false, not {value!r}")
    elif hint is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise ConfigError(f"{shown} must be a whole number, not {value!r}")
    elif hint is str and not isinstance(value, str):
        raise ConfigError(f"{shown} must be a string, not {value!r}")
    elif hint is float and not isinstance(value, float):
        raise ConfigError(f"{shown} must be a number, not {value!r}")
    if (meta.get("nonempty") or meta.get("database")) and not value.strip():
        raise ConfigError(f"{shown} must not be empty")
    if meta.get("database") and "://" in value and not is_database_url(value):
        raise ConfigError(f"{shown} must be a file path or a postgresql:// URL, not {value!r}")
    if meta.get("database") and is_database_url(value) and not _names_server(value):
        raise ConfigError(f"{shown} must name a host, such as postgresql://host/dbname")
    if meta.get("path") and not value.startswith("/"):
        raise ConfigError(f"{shown} must start with /, not {value!r}")
    if meta.get("url"):
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ConfigError(
                f"{shown} must be an http(s) URL such as https://host/path, not {value!r}"
            )
    if meta.get("ws_url"):
        parts = urlsplit(value)
        if parts.scheme not in {"ws", "wss"} or not parts.netloc:
            raise ConfigError(f"{shown} must be a ws(s) URL such as wss://host/, not {value!r}")
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(f"{shown} must be {bounds}, not {value!r}")
    return value


def _ids(value: Any, shown: str) -> tuple[int, ...]:
    """A list of snowflakes; strings of digits too, since ids are often pasted quoted."""
    if not isinstance(value, list):
        raise ConfigError(f"{shown} must be a list of ids, not {value!r}")
    ids: list[int] = []
    for item in value:
        number = int(item.strip()) if isinstance(item, str) and item.strip().isdigit() else item
        if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
            raise ConfigError(f"{shown} must hold ids (whole numbers), not {item!r}")
        ids.append(number)
    return tuple(ids)
