"""Analysis worker: keyword statistics over a turn's articles, run as an isolated child process.

:class:`bot.agents.analysis.AnalysisAgent` runs this file by path with ``python -I``, so it
uses the standard library only and never imports ``bot``.

Protocol: one JSON object on stdin, one JSON object on stdout.

Request::

    {"keywords": ["neural", "network"],
     "articles": [{"source": "wikipedia", "title": "...", "url": "...", "text": "...",
                   "rank": 0}, ...],
     "top_keywords": 10}

Response::

    {"article_count": 2,
     "per_source": {"wikipedia": 1, "hackernews": 1},
     "average_relevance": 0.75,
     "keyword_frequencies": [["network", 12], ["neural", 9], ...],
     "top_articles": [["Artificial neural network", 1.0], ...]}

Tokens are lowercase runs of letters and digits at least :data:`MIN_TOKEN_LENGTH` long;
pure numbers and :data:`STOP_WORDS` are dropped. ``keyword_frequencies`` counts tokens of
every title and text, most frequent first (ties alphabetical), at most ``top_keywords``.

Relevance of one article, in 0..1: the query terms are the distinct tokens of the keywords
(stop words removed, unless that leaves none). Each term scores 1.0 if it appears in the
title, 0.5 if it appears only in the text, 0 otherwise; relevance is the mean over the
terms (0.0 when there are none). A crude plural folding lets ``network`` match
``networks``. ``top_articles`` holds the :data:`TOP_ARTICLES` most relevant articles (ties
by the source's own rank, then input order); ``average_relevance`` is the mean over all.

Exit status: 0 with the response on stdout; 2 with a message on stderr and nothing on
stdout when the request is not valid JSON or does not have the shape above.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any

MIN_TOKEN_LENGTH = 2
TOP_ARTICLES = 5
MAX_TOP_KEYWORDS = 1000
TITLE_HIT = 1.0
TEXT_HIT = 0.5
EXIT_BAD_INPUT = 2

# Runs of Unicode letters and digits (``\w`` without the underscore).
_TOKEN_RE = re.compile(r"[^\W_]+")

# Common English function words, plus web debris (URL parts, HTML entities).
_STOP_WORDS_TEXT = """
    a about above across after again against all almost along already also although always
    am among an and another any anyone anything are aren around as at be became because
    become been before being below between both but by can cannot could couldn did didn do
    does doesn doing don done down during each either else enough etc even ever every few
    for from further get gets got had hadn has hasn have haven having he her here hers
    herself him himself his how however i if in into is isn it its itself just least less
    let like ll made make many may me might mine more most much must my myself neither no
    nor not now of off often on once one only onto or other others our ours ourselves out
    over own per perhaps quite rather re really same say says said see seen several shall
    she should shouldn since so some something such than that the their theirs them
    themselves then there therefore these they this those though through thus to too
    toward towards under until up upon us use used using ve very via was wasn way we well
    were weren what whatever when where whether which while who whom whose why will with
    within without won would wouldn yet you your yours yourself yourselves
    http https www com org html htm amp quot nbsp
"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())


class BadInput(ValueError):
    """The request is not valid JSON or does not have the documented shape."""


@dataclass(frozen=True, slots=True)
class Doc:
    source: str
    title: str
    text: str
    rank: int


@dataclass(frozen=True, slots=True)
class Request:
    keywords: tuple[str, ...]
    articles: tuple[Doc, ...]
    top_keywords: int


def tokenize(text: str) -> list[str]:
    """Content tokens of ``text``: lowercase, no stop words, no pure numbers, no short ones."""
    return [
        token
        for token in _TOKEN_RE.findall(text.lower())
        if len(token) >= MIN_TOKEN_LENGTH and not token.isdigit() and token not in STOP_WORDS
    ]


def fold(token: str) -> str:
    """Crude plural folding used for matching only: ``networks`` -> ``network``."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def query_terms(keywords: tuple[str, ...]) -> list[str]:
    """Distinct folded terms of the keywords, in first-seen order."""
    joined = " ".join(keywords)
    tokens = tokenize(joined) or _TOKEN_RE.findall(joined.lower())
    return list(dict.fromkeys(fold(token) for token in tokens))


def relevance(terms: list[str], title: str, text: str) -> float:
    """Mean per-term score: 1.0 for a title hit, 0.5 for a text-only hit (see module doc)."""
    if not terms:
        return 0.0
    in_title = {fold(token) for token in _TOKEN_RE.findall(title.lower())}
    in_text = {fold(token) for token in _TOKEN_RE.findall(text.lower())}
    score = sum(
        TITLE_HIT if term in in_title else TEXT_HIT if term in in_text else 0.0 for term in terms
    )
    return round(score / len(terms), 4)


def analyze(request: Request) -> dict[str, Any]:
    """Compute the response object for a valid request."""
    terms = query_terms(request.keywords)
    scored = [
        (relevance(terms, doc.title, doc.text), doc.rank, index, doc)
        for index, doc in enumerate(request.articles)
    ]
    counts: Counter[str] = Counter()
    for doc in request.articles:
        counts.update(tokenize(doc.title))
        counts.update(tokenize(doc.text))
    frequencies = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    best = sorted(scored, key=lambda item: (-item[0], item[1], item[2]))[:TOP_ARTICLES]
    average = sum(item[0] for item in scored) / len(scored) if scored else 0.0
    return {
        "article_count": len(request.articles),
        "per_source": dict(Counter(doc.source for doc in request.articles)),
        "average_relevance": round(average, 4),
        "keyword_frequencies": [[word, n] for word, n in frequencies[: request.top_keywords]],
        "top_articles": [[item[3].title, item[0]] for item in best],
    }


def parse_request(raw: bytes) -> Request:
    """Decode and validate the request.

    Raises:
        BadInput: not UTF-8, not JSON, or not the documented shape.
    """
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput(f"request is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInput("request must be a JSON object")
    keywords = _require(data, "keywords", list, "request")
    if not all(isinstance(word, str) for word in keywords):
        raise BadInput("request.keywords must be a list of strings")
    articles = _require(data, "articles", list, "request")
    top = _require(data, "top_keywords", int, "request")
    if not 1 <= top <= MAX_TOP_KEYWORDS:
        raise BadInput(f"request.top_keywords must be between 1 and {MAX_TOP_KEYWORDS}")
    return Request(
        keywords=tuple(keywords),
        articles=tuple(_parse_article(item, f"articles[{i}]") for i, item in enumerate(articles)),
        top_keywords=top,
    )


def _parse_article(item: object, where: str) -> Doc:
    if not isinstance(item, dict):
        raise BadInput(f"{where} must be an object")
    _require(item, "url", str, where)
    return Doc(
        source=_require(item, "source", str, where),
        title=_require(item, "title", str, where),
        text=_require(item, "text", str, where),
        rank=_require(item, "rank", int, where),
    )


def _require(obj: dict[str, Any], key: str, kind: type[Any], where: str) -> Any:
    if key not in obj:
        raise BadInput(f"{where}.{key} is missing")
    value = obj[key]
    # bool is an int in Python; JSON true is not a number here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadInput(f"{where}.{key} must be of type {kind.__name__}")
    return value


NICENESS = 10


def main() -> int:
    # The embedding compute runs beside this and is what the answer waits for; when the
    # cores are busy, let it go first (when they are idle, niceness costs nothing).
    os.nice(NICENESS)
    try:
        request = parse_request(sys.stdin.buffer.read())
    except BadInput as exc:
        sys.stderr.write(f"analysis_worker: bad input: {exc}\n")
        return EXIT_BAD_INPUT
    # ASCII-only JSON, written as bytes: independent of the child's locale.
    out = json.dumps(analyze(request), ensure_ascii=True, separators=(",", ":"))
    sys.stdout.buffer.write(out.encode("ascii") + b"\n")
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
