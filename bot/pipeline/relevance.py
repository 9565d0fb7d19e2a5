"""Which sources matter: the question and the articles embedded and ranked, and the
answer's citations checked against the passages of the sources they cite.

This is the part of a turn that needs the embedding model, so it is where a turn waits
for the model still loading in the background. Without vectors (the model or the pool
failed) the ranking rests on BM25 and the sources' own order, and the reply says so;
citations then go unchecked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import NamedTuple

import numpy as np

from bot.agents.embeddings import EmbeddingAgent, FloatArray
from bot.config import CitationSettings, RankingSettings
from bot.contract import Attribution, Notice, WeakCitation
from bot.domain import Article, RankedArticle
from bot.errors import EmbeddingError
from bot.pipeline import citations, ranking
from bot.pipeline.ranking import article_text
from bot.pipeline.turn import Numbered, Turn
from bot.pipeline.wording import NOT_RANKED, split_sentences

_log = logging.getLogger(__name__)

PassageVectors = dict[int, FloatArray]
"""Each numbered source's passage vectors, by source number."""


class CitationCheck(NamedTuple):
    """What the check found: weak citations, citations added to uncited sentences, and
    whether an answer that cites nothing was checked and matched no source at all."""

    weak: list[WeakCitation]
    attributed: list[Attribution]
    unmatched: bool = False


class Relevance:
    """Ranks a turn's candidates and checks its citations, with one embedding agent."""

    def __init__(
        self,
        embeddings: EmbeddingAgent,
        *,
        ranking_settings: RankingSettings,
        citation_settings: CitationSettings,
    ) -> None:
        self._embeddings = embeddings
        self._ranking = ranking_settings
        self._citations = citation_settings

    @property
    def loading(self) -> bool:
        """Whether the embedding model is still loading (the ranking will wait for it)."""
        return not self._embeddings.ready

    async def embed_question(self, question: str, *readings: str) -> FloatArray | None:
        """The question's vector; None when the pool failed (logged).

        With ``readings`` (the question read in its conversation), the normalised mean of
        all their vectors: a follow-up alone names no topic, the conversation alone is
        about the previous question, and the mean keeps both.
        """
        try:
            vectors = await self._embeddings.embed([question, *readings])
        except EmbeddingError:
            _log.exception("embedding the question failed; ranking without dense scores")
            return None
        mean: FloatArray = vectors.astype(np.float32).mean(axis=0)
        norm = float(np.linalg.norm(mean))
        return mean / np.float32(norm) if norm > 0 else mean

    async def rank(
        self,
        turn: Turn,
        topics: Sequence[str],
        articles: Sequence[Article],
        question_vector: Awaitable[FloatArray | None],
    ) -> list[RankedArticle]:
        """Embed the articles, then fuse dense, lexical and source-order scores."""
        if not articles:
            return []
        dense = np.zeros(len(articles), dtype=np.float32)
        try:
            vectors = await self._embeddings.embed([article_text(a) for a in articles])
        except EmbeddingError as error:
            _log.exception("embedding the articles failed; ranking without dense scores")
            turn.notices.append(Notice("ranking_unavailable", NOT_RANKED, operator=str(error)))
            vectors = None
        query = await question_vector
        if vectors is not None and query is not None:
            dense = vectors @ query
        elif vectors is not None:
            # The articles have vectors but the question has none to compare them with.
            turn.notices.append(Notice("ranking_unavailable", NOT_RANKED))
        return ranking.rank(
            articles,
            [float(d) for d in dense],
            ranking.query_terms(turn.question, topics),
            fusion=self._ranking.fusion,
            hn_share=self._ranking.hackernews_share,
        )

    async def quotes(
        self, sources: Sequence[Numbered], question: Awaitable[FloatArray | None]
    ) -> dict[int, str]:
        """Each source's sentence closest in meaning to the question, by source number.

        For the answers the bot writes from its sources (the model down, or its answer
        matched none): a source's first sentence seldom answers the question ("born in
        1989 in Pennsylvania" for how much a tour made). Empty without vectors; the
        caller then quotes first sentences.
        """
        split = [(s.n, split_sentences(text)) for s, text in sources]
        query = await question
        if query is None:
            return {}
        try:
            vectors = await self._embed_parts(split)
        except EmbeddingError:
            _log.warning("quoting first sentences: embedding the sources failed", exc_info=True)
            return {}
        # argmax keeps the earliest of equals: a source's opening names its subject.
        return {n: parts[int(np.argmax(vectors[n] @ query))] for n, parts in split if parts}

    @property
    def checks_citations(self) -> bool:
        return self._citations.check

    async def embed_passages(self, sources: Sequence[Numbered]) -> PassageVectors | None:
        """Each numbered source's passage vectors; None when the pool failed."""
        split = [(s.n, citations.passages(text)) for s, text in sources]
        try:
            return await self._embed_parts(split)
        except EmbeddingError:
            _log.warning("citations not checked: embedding the passages failed", exc_info=True)
            return None

    async def _embed_parts(self, split: Sequence[tuple[int, list[str]]]) -> PassageVectors:
        """The vectors of each source's parts, by source number, embedded in one batch."""
        texts = [part for _, parts in split for part in parts]
        if not texts:
            return {}
        vectors = await self._embeddings.embed(texts)
        out, start = {}, 0
        for n, parts in split:
            out[n] = vectors[start : start + len(parts)]
            start += len(parts)
        return out

    async def check_citations(
        self, body: str, passages: Awaitable[PassageVectors | None]
    ) -> CitationCheck:
        """The model's citations that their sources barely support, and, with
        ``[citations].attribute``, sources for the sentences it left uncited (see
        bot.pipeline.citations). The sentences of both are embedded in one batch."""
        cited = citations.cited_sentences(body)
        claims = citations.uncited_claims(body) if self._citations.attribute else []
        vectors = await passages
        if vectors is None:
            return CitationCheck([], [])
        if not (cited or claims):
            # Nothing cited, and no sentence long enough to be a claim ("The answer is: 3").
            return CitationCheck([], [], unmatched=self._citations.attribute)
        try:
            embedded = await self._embeddings.embed([c.text for c in cited] + claims)
        except EmbeddingError:
            _log.warning("citations not checked: embedding the sentences failed", exc_info=True)
            return CitationCheck([], [])
        sentence_vectors, claim_vectors = embedded[: len(cited)], embedded[len(cited) :]
        weak = citations.weak(cited, sentence_vectors, vectors, self._citations.threshold)
        if weak:
            _log.info("weak citations: %s", [(w.n, w.support) for w in weak])
        added = citations.attribute(
            claims, claim_vectors, vectors, self._citations.attribution_threshold
        )
        if claims:
            _log.info(
                "attributed %d of %d uncited sentences: %s",
                len(added),
                len(claims),
                [(a.n, a.support) for a in added],
            )
        return CitationCheck(weak, added, unmatched=not cited and bool(claims) and not added)
