"""Citations checked against their sources: is a sentence that cites ``[n]`` backed by source n?

Each sentence of the answer that cites a source is embedded (without its citation marks) and
compared with that source's passages (windows of :data:`PASSAGE_SENTENCES` sentences, so a
claim that spans two sentences of the source still finds them together). The support of a
citation is the best cosine with one passage; below ``[citations].threshold`` the citation
is weak: the reply lists it and renderers show ``[n?]``. The threshold is calibrated by
``bench/citations.py`` on a labelled set of supported and unsupported cited sentences.

A sentence the model left uncited is attributed (:func:`attribute`): given the source whose
passage supports it best, when that support reaches ``[citations].attribution_threshold``
(calibrated by the same bench: a claim must find its own source among many namesakes).
Below it, the sentence stays uncited. The same passage vectors serve both checks.

Embedding goes through the shared pool and its vector cache: the passages are embedded while
the answer is being written (they are known as soon as the sources are numbered), so only
the few cited sentences are left for after the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bot.contract import Attribution, WeakCitation

FloatArray = npt.NDArray[np.float32]

PASSAGE_SENTENCES = 2
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_BEFORE_PUNCTUATION = re.compile(r"\s+([.!?,;:])")
# A sentence this short, a question or a lead-in to a list makes no claim to attribute.
MIN_CLAIM_WORDS = 5
_BOUNDARY = re.compile(r"[.!?](?:\s*\[\d+(?:\s*,\s*\d+)*\])*(?=\s+[\"'(]?[A-Z0-9])")


@dataclass(frozen=True, slots=True)
class CitedSentence:
    text: str  # without its citation marks
    numbers: tuple[int, ...]
    original: str


def sentences(text: str) -> list[str]:
    """Sentences of ``text``, cut after ``.!?`` followed by a capital or a digit.

    A citation mark written after the full stop (``... it. [2] Next``) stays with the
    sentence it closes. Each sentence is a verbatim slice of ``text``.
    """
    out, start = [], 0
    for match in _BOUNDARY.finditer(text):
        out.append(text[start : match.end()].strip())
        start = match.end()
    out.append(text[start:].strip())
    return [s for s in out if s]


def cited_sentences(body: str) -> list[CitedSentence]:
    found = []
    for sentence in sentences(body):
        numbers = [int(n) for group in _CITATION.findall(sentence) for n in group.split(",")]
        if numbers:
            plain = _BEFORE_PUNCTUATION.sub(r"\1", " ".join(_CITATION.sub(" ", sentence).split()))
            found.append(CitedSentence(plain, tuple(dict.fromkeys(numbers)), sentence))
    return found


def passages(text: str) -> list[str]:
    """Overlapping windows of :data:`PASSAGE_SENTENCES` sentences (one if the text is short)."""
    parts = sentences(text)
    if len(parts) <= PASSAGE_SENTENCES:
        return [" ".join(parts)] if parts else []
    return [
        " ".join(parts[i : i + PASSAGE_SENTENCES])
        for i in range(len(parts) - PASSAGE_SENTENCES + 1)
    ]


def support(sentence: FloatArray, passage_vectors: FloatArray) -> float:
    """The best cosine of a sentence with one of its source's passages (vectors normalised)."""
    if passage_vectors.shape[0] == 0:
        return 0.0
    return float(np.max(passage_vectors @ sentence))


def weak(
    cited: Sequence[CitedSentence],
    sentence_vectors: FloatArray,
    passage_vectors: dict[int, FloatArray],
    threshold: float,
) -> list[WeakCitation]:
    """The citations whose support is below ``threshold``; unknown numbers are skipped."""
    out = []
    for sentence, vector in zip(cited, sentence_vectors, strict=True):
        for n in sentence.numbers:
            vectors = passage_vectors.get(n)
            if vectors is None:
                continue
            score = support(vector, vectors)
            if score < threshold:
                out.append(WeakCitation(n, sentence.original, round(score, 4)))
    return out


def uncited_claims(body: str) -> list[str]:
    """The sentences of ``body`` that cite nothing and make a claim (verbatim slices).

    Each line is split on its own: a bullet point is a claim even without a full stop.
    """
    out = []
    for sentence in (s for line in body.splitlines() for s in sentences(line)):
        if _CITATION.search(sentence) or sentence.rstrip().endswith(("?", ":")):
            continue
        if len(sentence.split()) >= MIN_CLAIM_WORDS:
            out.append(sentence)
    return out


def attribute(
    claims: Sequence[str],
    vectors: FloatArray,
    passage_vectors: dict[int, FloatArray],
    threshold: float,
) -> list[Attribution]:
    """Each claim's best-supporting source, when its support reaches ``threshold``."""
    out = []
    for claim, vector in zip(claims, vectors, strict=True):
        scores = {n: support(vector, vs) for n, vs in passage_vectors.items()}
        if not scores:
            break
        best = max(scores, key=lambda n: (scores[n], -n))
        if scores[best] >= threshold:
            out.append(Attribution(best, claim, round(scores[best], 4)))
    return out
