"""The bot's Prometheus metrics, in one registry of their own.

Counted where they are seen: the intake counts events, turns and take-overs; the
adapters count the 429s their platform sends; what is a level rather than a count (the
inbox's backlog, live replicas, connected platforms, embedding cache lookups) is read
when /metrics is scraped (:mod:`bot.ops`). Labels are platforms, steps, outcomes and
source names, never user, channel or conversation ids: those would make a series per
person, and put who asked what into the monitoring system.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

# Outcomes of the intake that are not a question addressed to the bot.
_NOT_QUESTIONS = frozenset({"ignored"})

EVENTS = Counter(
    "research_agent_events",
    "Inbound platform events by what the intake did with them",
    ["platform", "outcome"],
    registry=REGISTRY,
)
QUESTIONS_RECEIVED = Counter(
    "research_agent_questions_received",
    "Messages addressed to the bot (questions, commands), redeliveries included",
    ["platform"],
    registry=REGISTRY,
)
QUESTIONS_DEDUPLICATED = Counter(
    "research_agent_questions_deduplicated",
    "Redeliveries recognised and not answered again (a platform's retry, a second replica)",
    ["platform"],
    registry=REGISTRY,
)
TURNS = Counter(
    "research_agent_turns",
    "Turns finished, by how they ended (answered, partial, failed)",
    ["platform", "status"],
    registry=REGISTRY,
)
TURN_STEP_SECONDS = Histogram(
    "research_agent_turn_step_seconds",
    "Time each step of a turn took ('total' is the whole turn)",
    ["step"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
    registry=REGISTRY,
)
TURN_NOTICES = Counter(
    "research_agent_turn_notices",
    "Turns with a notice, by its kind: why a turn was degraded (answer_uncited, answer_cut...)",
    ["kind"],
    registry=REGISTRY,
)
LLM_ERRORS = Counter(
    "research_agent_llm_errors",
    "Turns in which the language model failed (down, too slow, or an error)",
    registry=REGISTRY,
)
SOURCE_ERRORS = Counter(
    "research_agent_source_errors",
    "Turns in which a source (Wikipedia, Hacker News) could not be read",
    ["source"],
    registry=REGISTRY,
)
TAKEN_OVER = Counter(
    "research_agent_leases_taken_over",
    "Events this replica took over: their replica died or stopped renewing its lease",
    registry=REGISTRY,
)
QUARANTINED = Counter(
    "research_agent_events_quarantined",
    "Events given up on after crashing the bot on every attempt",
    registry=REGISTRY,
)
UNDELIVERED = Counter(
    "research_agent_answers_undelivered",
    "Answers the platform never took before [intake].delivery_deadline_s",
    ["platform"],
    registry=REGISTRY,
)
PLATFORM_429 = Counter(
    "research_agent_platform_rate_limited",
    "429 (rate limited) responses received from a chat platform",
    ["platform"],
    registry=REGISTRY,
)
INBOX_PENDING = Gauge(
    "research_agent_inbox_pending",
    "Events taken and not finished yet (being answered, or awaiting delivery), all replicas",
    registry=REGISTRY,
)
INBOX_OLDEST_AGE = Gauge(
    "research_agent_inbox_oldest_pending_age_seconds",
    "Age of the oldest event taken and not finished (0 when none)",
    registry=REGISTRY,
)
REPLICAS = Gauge(
    "research_agent_replicas",
    "Live replicas sharing the store, as this one last counted (1 alone)",
    registry=REGISTRY,
)
PLATFORM_CONNECTED = Gauge(
    "research_agent_platform_connected",
    "1 while the platform's connection is up",
    ["platform"],
    registry=REGISTRY,
)
READY = Gauge(
    "research_agent_ready",
    "1 while /readyz says ready",
    registry=REGISTRY,
)


def count_event(platform: str, outcome: str) -> None:
    """One inbound event and what the intake did with it."""
    EVENTS.labels(platform, outcome).inc()
    if outcome in _NOT_QUESTIONS:
        return
    QUESTIONS_RECEIVED.labels(platform).inc()
    if outcome == "duplicate":
        QUESTIONS_DEDUPLICATED.labels(platform).inc()


class EmbeddingCacheCollector(Collector):
    """The embedding cache's lookups since start-up, read from the agent when scraped."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def update(self, *, memory_hits: int, store_hits: int, misses: int) -> None:
        self._counts = {"memory": memory_hits, "store": store_hits, "miss": misses}

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "research_agent_embedding_cache_lookups",
            "Embedding cache lookups since start-up: found in memory, in the store, or missed",
            labels=["result"],
        )
        for result, count in self._counts.items():
            family.add_metric([result], count)
        yield family

    def describe(self) -> Iterable[Metric]:
        return self.collect()


EMBEDDING_CACHE = EmbeddingCacheCollector()
REGISTRY.register(EMBEDDING_CACHE)
