"""The fetch agent: a turn's keywords in, articles from Wikipedia and Hacker News out.

    FetchAgent.fetch(keywords)
      ├─ wikipedia.requests ──┐   every request of the turn at once (one round trip),
      ├─ hackernews.requests ─┴─► http.JsonClient: cache, shared in-flight, retries, caps
      └─ per source: its parser's articles, deduplicated; a source whose every request
         failed is named in FetchResult.unavailable

A source is a module with ``LABEL``, ``requests(settings, terms, max_chars)``, a parser and
``permalink(article)``; adding one means adding such a module and listing it in
:mod:`.agent` (and its settings in :mod:`bot.config`).

Errors: inside the agent every library, HTTP or payload error becomes
:class:`~bot.errors.SourceUnavailable` and is logged. :meth:`FetchAgent.fetch` does not
raise it: the articles that did arrive are kept. Only cancellation (and bugs) propagate.
"""

from __future__ import annotations

from bot.agents.fetch.agent import FetchAgent, provenance

__all__ = ["FetchAgent", "provenance"]
