"""Hybrid ranking of one turn's candidates: lexical, dense and the sources' own order, fused.

A turn has ten or twenty candidates, on confusable topics as often as not (Mercury the
planet, the element and the singer). Dense cosine reads the question's meaning but can
follow its wording to a neighbour; a lexical scorer rewards the rare words that tell the
neighbours apart, and sees the search keywords, which the keyword step already resolved
against the conversation (a follow-up's "it"). So each candidate gets three scores:

* ``bm25``: BM25F over two fields, the title (weighted :data:`TITLE_WEIGHT`) and the intro
  (the article's text), with the document frequencies of this turn's candidates, so a word
  every candidate shares ("mercury") counts for little and a distinguishing one for a lot;
* ``dense``: the cosine of the question and the candidate (computed by the caller);
* ``prior``: ``1 / (1 + rank)`` from the position in its source's own result list, weak.

:func:`fuse` combines them by reciprocal-rank fusion (``"rrf"``) or by a weighted sum of
per-turn normalised scores (``"weighted"``); ``bench/retrieval.py`` measures both, and
the weights here are the ones it calibrated. Then two rules that hold whatever the
scores say: a disambiguation page never comes first (:func:`is_disambiguation`), and
Hacker News stories may take at most :data:`HN_SHARE` of any prefix of the ranking (but
always the first place if they earned it), so they compete without crowding out articles.

Everything here is pure and synchronous: numbers in, order out.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.contract import ScoreParts
from bot.domain import Article, RankedArticle

Fusion = Literal["rrf", "weighted"]

# BM25 constants: the usual k1; b a little below the usual 0.75 because intros are all of
# a similar length and a short Hacker News title should not win on brevity alone.
K1 = 1.2
B = 0.6
TITLE_WEIGHT = 2.5
INTRO_WEIGHT = 1.0

# Reciprocal-rank fusion: score = sum of weight / (RRF_K + rank), rank counted from 1.
# Calibrated by bench/retrieval.py --keyword-modes all: the grid's best over every kind of
# keyword reply, judged by the worst. BM25 counts a little less than the embedding, and the
# source's own order barely counts: a search run on a small model's odd keywords, or on the
# question's own words, orders its results by those words, not by the question. The grid
# scores prior 0 and 0.05 the same; 0.05 lets the search engine's order break exact ties.
RRF_K = 10.0
RRF_WEIGHTS = {"dense": 1.0, "bm25": 0.75, "prior": 0.05}
# Weighted sum of normalised scores (dense: raw cosine; bm25: divided by the turn's best;
# prior: 1 / (1 + rank)), calibrated by the same bench.
SUM_WEIGHTS = {"dense": 1.0, "bm25": 0.2, "prior": 0.1}

# Hacker News may hold at most this share of any prefix of the ranking (at least one).
HN_SHARE = 0.4

_WORD = re.compile(r"[a-z0-9]+(?:[+#]+)?")
STOPWORDS = frozenset(
    """
    a an the and or but of in on at to for from by with about into over under as than then
    is are was were be been being am do does did done has have had can could should would
    will shall may might must what which who whom whose where when why how that this these
    those it its they them their there here i me my we our you your he she his her him
    not no so if also just very much many more most some any all one ones s
    tell explain describe please know thing things get got use used using like
    """.split()
)
_DISAMBIGUATION = re.compile(r"\b(?:may|might|can|could) (?:also )?refer to\b", re.IGNORECASE)


# --------------------------------------------------------------------------- lexical


def article_text(article: Article) -> str:
    """What is embedded of an article (and what the vector cache keys it by)."""
    return f"{article.title}. {article.text}"


def plural(word: str) -> str:
    """The singular of a plural ("planets", "galaxies"); other words as they are."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


_VOWEL = re.compile(r"[aeiouy]")


def stem(word: str) -> str:
    """A light suffix strip, so a word's inflections meet: "planets" and "planet",
    "dancing", "dances" and "dance", "misfired" and "misfires".

    Only inflections, never derivations ("singer" stays apart from "sing"). Its few wrong
    merges ("fir" for "fire") cost little among a turn's candidates, while a missed one
    loses the word that tells two neighbours apart (bench/retrieval.py: hit@1 0.925 with
    plurals alone, 0.955 with this).
    """
    word = plural(word)
    for suffix in ("ing", "ed"):
        base = word[: -len(suffix)]
        if word.endswith(suffix) and len(base) >= 3 and _VOWEL.search(base):
            # "running" -> "runn" -> "run"; "falling" keeps its "ll".
            if base[-1] == base[-2] and base[-1] not in "lsz":
                base = base[:-1]
            word = base
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def terms(text: str, normalise: Callable[[str], str] = stem) -> list[str]:
    """Lower-cased content words, each through ``normalise``."""
    return [normalise(word) for word in _WORD.findall(text.lower()) if word not in STOPWORDS]


@dataclass(frozen=True, slots=True)
class _Doc:
    title: Counter[str]
    intro: Counter[str]
    title_len: int
    intro_len: int


def _intro(article: Article) -> str:
    text = article.text
    # A story's text starts with its title again (see the fetch agent); count it once.
    if article.source == "hackernews" and text.startswith(article.title):
        text = text[len(article.title) :]
    return text


def bm25(query: Iterable[str], articles: Sequence[Article]) -> list[float]:
    """BM25F of ``query`` (terms) for each article, over the title and intro fields.

    Document frequencies come from ``articles`` alone; a term counts once however often
    the query repeats it.
    """
    docs = []
    for a in articles:
        title, intro = terms(a.title), terms(_intro(a))
        docs.append(_Doc(Counter(title), Counter(intro), len(title), len(intro)))
    n = len(docs)
    if n == 0:
        return []
    avg_title = sum(d.title_len for d in docs) / n or 1.0
    avg_intro = sum(d.intro_len for d in docs) / n or 1.0
    scores = [0.0] * n
    for term in set(query):
        df = sum(1 for d in docs if term in d.title or term in d.intro)
        if df == 0:
            continue
        idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = TITLE_WEIGHT * d.title[term] / (1 - B + B * d.title_len / avg_title)
            tf += INTRO_WEIGHT * d.intro[term] / (1 - B + B * d.intro_len / avg_intro)
            if tf:
                scores[i] += idf * tf / (K1 + tf)
    return scores


def query_terms(question: str, keywords: Sequence[str]) -> list[str]:
    """The lexical query: the question's words and the search keywords' words.

    The keywords matter most for follow-ups: "when was it discovered?" has no topic word,
    but the keyword step resolved "it" from the conversation.
    """
    return terms(" ".join([question, *keywords]))


# --------------------------------------------------------------------------- rules


def is_disambiguation(article: Article) -> bool:
    """A page that lists meanings instead of explaining one.

    The fetch agent drops the pages Wikipedia marks; this also catches unmarked ones
    ("X (disambiguation)", "X may refer to:").
    """
    return article.source == "wikipedia" and is_disambiguation_text(article.title, article.text)


def is_disambiguation_text(title: str, text: str) -> bool:
    return title.endswith("(disambiguation)") or bool(_DISAMBIGUATION.search(text[:300]))


def prior(rank: int) -> float:
    return 1.0 / (1.0 + max(rank, 0))


# --------------------------------------------------------------------------- fusion


def _ranks(scores: Sequence[float]) -> list[int]:
    """1-based rank of each score, best first; ties share the better rank."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for position, i in enumerate(order, start=1):
        previous = order[position - 2] if position > 1 else None
        tied = previous is not None and scores[previous] == scores[i]
        ranks[i] = ranks[previous] if tied and previous is not None else position
    return ranks


def rrf(
    parts: Sequence[ScoreParts], *, k: float = RRF_K, weights: dict[str, float] | None = None
) -> list[float]:
    """Reciprocal-rank fusion of the three rankers (the prior ranks by ``source_rank``)."""
    w = RRF_WEIGHTS if weights is None else weights
    dense = _ranks([p.dense for p in parts])
    lexical = _ranks([p.bm25 for p in parts])
    by_source = [p.source_rank + 1 for p in parts]
    return [
        w["dense"] / (k + dense[i]) + w["bm25"] / (k + lexical[i]) + w["prior"] / (k + by_source[i])
        for i in range(len(parts))
    ]


def weighted(
    parts: Sequence[ScoreParts], *, weights: dict[str, float] | None = None
) -> list[float]:
    """A weighted sum: raw cosine, BM25 over the turn's best, and the prior."""
    w = SUM_WEIGHTS if weights is None else weights
    best = max((p.bm25 for p in parts), default=0.0) or 1.0
    return [w["dense"] * p.dense + w["bm25"] * p.bm25 / best + w["prior"] * p.prior for p in parts]


FUSIONS: dict[str, Callable[[Sequence[ScoreParts]], list[float]]] = {
    "rrf": rrf,
    "weighted": weighted,
}


def order(
    scores: Sequence[float],
    *,
    stories: Sequence[bool],
    demoted: Sequence[bool] = (),
    ranks: Sequence[int] = (),
    hn_share: float = HN_SHARE,
) -> list[int]:
    """Indices best first: by score (then source rank), ``demoted`` ones last, stories capped.

    ``stories`` marks Hacker News stories: in every prefix of length L at most
    ``max(1, floor(hn_share * L))`` of them, unless only stories are left.
    """
    n = len(scores)
    demoted = demoted or [False] * n
    ranks = ranks or [0] * n
    pending = sorted(range(n), key=lambda i: (demoted[i], -scores[i], ranks[i], i))
    chosen: list[int] = []
    taken = 0
    while pending:
        room = max(1, math.floor(hn_share * (len(chosen) + 1)))
        pick = next((i for i in pending if not stories[i] or taken < room), pending[0])
        pending.remove(pick)
        chosen.append(pick)
        taken += stories[pick]
    return chosen


def rank(
    articles: Sequence[Article],
    dense: Sequence[float],
    query: Sequence[str],
    *,
    fusion: Fusion = "rrf",
    hn_share: float = HN_SHARE,
) -> list[RankedArticle]:
    """Every article, best first, with its fused score and the parts it came from.

    ``dense`` holds each article's cosine with the question (zeros when the embeddings
    failed: the ranking then rests on BM25 and the prior); ``query`` the lexical terms.
    """
    if len(dense) != len(articles):
        raise ValueError(f"{len(dense)} dense scores for {len(articles)} articles")
    lexical = bm25(query, articles)
    parts = [
        ScoreParts(
            dense=round(float(d), 4),
            bm25=round(b, 4),
            prior=round(prior(a.rank), 4),
            source_rank=a.rank,
        )
        for a, d, b in zip(articles, dense, lexical, strict=True)
    ]
    fused = FUSIONS[fusion](parts)
    best_first = order(
        fused,
        stories=[a.source == "hackernews" for a in articles],
        demoted=[is_disambiguation(a) for a in articles],
        ranks=[a.rank for a in articles],
        hn_share=hn_share,
    )
    return [RankedArticle(articles[i], round(fused[i], 4), parts[i]) for i in best_first]
