"""The project's one exception tree.

SDK and library errors are translated into these at the boundary that called the SDK
(``raise SourceUnavailable(...) from exc``), so the pipeline never catches ``aiohttp``,
``httpx``, ``ollama``, ``openai`` or ``sqlite3`` errors directly.

    ResearchAgentError
    ├── ConfigError            config.toml or the environment is wrong; names each key
    ├── StartupError           start-up checks failed; every problem found, one line each
    ├── SourceUnavailable      one source failed this turn (timeout, HTTP error, garbage)
    ├── LLMError
    │   ├── LLMUnavailable     the LLM server (Ollama, OpenAI-compatible) cannot be used
    │   ├── LLMTimeout         ... or answers too slowly (first token, whole call, turn)
    │   └── ModelNotFound      the server answers but lacks the model (not pulled, not served)
    ├── StoreError             the store (the database) failed
    ├── AnalysisError          the analysis subprocess failed or printed garbage
    │   └── AnalysisTimeout    ... or ran past its hard timeout and was killed
    ├── EmbeddingError         the embedding workers could not produce vectors
    ├── PlatformSetupError     a chat platform refused to start: bad token, missing scope
    │                          or intent, uninstalled app
    └── DeliveryFailed         a chat platform did not take a reply (rate limited, a server
                               error); it carries the platform's retry hint

``str(exc)`` is for logs only and is never posted to users: what a chat user reads is a
fixed line chosen where the error is handled (:mod:`bot.pipeline.wording`). An
``LLMError``'s ``hint`` is for operators (the log and the terminal).
"""

from __future__ import annotations


class ResearchAgentError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(ResearchAgentError):
    """The configuration is invalid; each of ``problems`` names an offending key or variable.

    The loader reports every problem of a file and its environment in one error, so one
    run names everything to fix; ``str(exc)`` joins them with "; ".
    """

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class StartupError(ResearchAgentError):
    """The start-up checks found problems; ``problems`` lists them all, each with its fix.

    ``warnings`` are problems that alone would not stop the bot (Ollama down: answers list
    sources only), reported with the rest so that one run names everything to fix.
    """

    def __init__(self, problems: list[str], *, warnings: list[str] | None = None) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)
        self.warnings = tuple(warnings or ())

    @property
    def lines(self) -> tuple[str, ...]:
        return self.problems + self.warnings


class SourceUnavailable(ResearchAgentError):
    """A research source could not be used for this turn."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class LLMError(ResearchAgentError):
    """The language model could not be used.

    ``hint`` tells the operator how to fix it (``ollama pull llama3.2``, a config key);
    it goes to the log and the terminal, never into a chat.
    """

    def __init__(self, message: str, *, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class LLMUnavailable(LLMError):
    """The LLM server is unreachable, refuses the bot (a key, a rate limit), or answers
    with errors or garbage."""


class LLMTimeout(LLMError):
    """The model did not start, or did not finish, within its deadline."""


class ModelNotFound(LLMError):
    """The LLM server is up but lacks the configured model (not pulled, not served)."""


class StoreError(ResearchAgentError):
    """Reading or writing the store (conversations, the inbox, vectors) failed."""


class AnalysisError(ResearchAgentError):
    """The analysis subprocess failed or returned something unusable."""


class AnalysisTimeout(AnalysisError):
    """The analysis subprocess ran past its hard timeout and was killed."""


class EmbeddingError(ResearchAgentError):
    """Embeddings could not be computed (model failed to load, workers kept dying)."""


class PlatformSetupError(ResearchAgentError):
    """A chat platform cannot be served; the message is one line naming the fix.

    Raised by an adapter's ``start`` (a revoked token, an uninstalled app, a missing
    scope or intent), so the process stops before it claims to be answering.
    """


class DeliveryFailed(ResearchAgentError):
    """A chat platform did not take a reply: rate limited, a server error, a lost connection.

    Raised by an adapter's reply stream; the intake keeps the answer and retries.
    ``retry_after_s`` is the platform's own hint of when to try again, when it gave one.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
