"""What a turn searches for: the model's keywords that pass a check, and always the
question's own words.

The keyword reply is the least reliable text in a turn: a small model answers the
question instead ("The answer to this question is ..."), names a topic from nowhere, or
sends nothing. So the reply may add to the search but never replace it:

* each keyword is checked (:func:`verdict`): prose and over-long ones are dropped; one that
  shares no word with the question or the recent conversation is still searched (a model's
  knowledge finds what the question's words cannot: "Uptown Funk" -> "Bruno Mars") but
  never as the primary topic, nor as words the ranking matches the candidates against;
  unless it repeats the keyword prompt's worked example ("Eiffel Tower"), then it is dropped;
* the question's salient words (:func:`question_terms`) are always searched too, and for a
  follow-up ("when was it discovered?") the previous question's, which name what "it" is.

The ranking then decides against the question, so a bad reply can add candidates but not
take the right ones away. Pure and synchronous: strings in, a plan out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from bot.pipeline.keywords import FILLER_WORDS
from bot.pipeline.prompts import KEYWORD_EXAMPLES
from bot.pipeline.ranking import STOPWORDS, plural, terms

__all__ = [
    "SearchPlan",
    "Verdict",
    "is_follow_up",
    "plan_search",
    "question_terms",
    "ranking_texts",
    "topic_question",
    "verdict",
]

Verdict = Literal["ok", "prose", "too long", "off topic", "example"]

# Keywords are titles and short phrases: past this it is a sentence, not a search.
MAX_KEYWORD_WORDS = 6
MAX_KEYWORD_CHARS = 80
# Single words of the question searched alone (search APIs want every word of a query to
# match, so the question's words joined find nothing as often as not).
QUESTION_TERMS = 4
QUESTION_TERMS_BESIDE = 2
# Words of the previous question searched for a follow-up.
TOPIC_TERMS = 2

_WORD = re.compile(r"[\w][\w'’+#.-]*")
# The keyword prompt's worked examples: a small model repeats them for any question.
_EXAMPLE_KEYWORDS = frozenset(k.casefold() for *_, keywords in KEYWORD_EXAMPLES for k in keywords)

# Words that point back into the conversation: without them a question stands alone.
_REFERENCES = frozenset(
    "it its it's they them their theirs there this that these those he him his she her".split()
)
# "Sure, here are...", "I think...", "Note: ...": a reply to the reader, not a keyword.
_CHATTY = re.compile(
    r"^(?:sure|okay|ok|certainly|here(?:'s| is| are)|i\b|i'm|let me|note|based on|"
    r"the answer|answer|as an ai)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class SearchPlan:
    """One turn's searches.

    ``topics``: what the turn is about, primary first (the keywords that passed, else the
    question's words); shown to the user and given to the analysis.
    ``search``: every search, the primary topic first (its title is looked up).
    ``lexical``: what the ranking matches besides the question (keywords that passed, and
    a follow-up's topic words).
    ``rejected``: each keyword not used as it came, with why (for the log).
    """

    topics: tuple[str, ...]
    search: tuple[str, ...]
    lexical: tuple[str, ...]
    rejected: tuple[tuple[str, Verdict], ...] = ()


def verdict(keyword: str, related: frozenset[str]) -> Verdict:
    """Whether ``keyword`` can be used as is; ``related``: the words of the question and
    the recent conversation, plurals made singular.

    Only plurals meet here, not the ranking's other inflections: a keyword must share a
    word with the question to be searched, and "programming" must not vouch for "Rust
    (programming language)" beside "its astronaut program" (bench/retrieval.py's
    wrong-topic reply: hit@1 0.866 with the ranking's stemmer, 0.881 with plurals).
    """
    words = keyword.split()
    if _is_prose(keyword, words):
        return "prose"
    if len(words) > MAX_KEYWORD_WORDS or len(keyword) > MAX_KEYWORD_CHARS:
        return "too long"
    if not related.intersection(terms(keyword, plural)):
        # A copy of the prompt's example is not the model's knowledge: not searched at all.
        return "example" if " ".join(words).casefold() in _EXAMPLE_KEYWORDS else "off topic"
    return "ok"


def _is_prose(keyword: str, words: Sequence[str]) -> bool:
    if _CHATTY.match(keyword):
        return True
    if len(words) >= 4 and keyword[-1] in ".!?:":
        return True
    # A phrase that is mostly function words is a sentence's start ("the answer to this
    # question is"), unless it is written like a title ("There Will Be Blood").
    if len(words) < 4 or all(w[:1].isupper() or not w[:1].isalpha() for w in words):
        return False
    filler = sum(1 for w in words if w.casefold().strip(".,:;!?") in STOPWORDS)
    return filler / len(words) > 0.6


def question_terms(question: str, limit: int | None = QUESTION_TERMS) -> list[str]:
    """The question's salient words, each a search of its own, the likeliest first (the
    first ``limit``; None: all).

    Content words (stop and filler words removed, a possessive's "'s" dropped), longest
    first: with no word statistics at hand, length is the cheap proxy for rarity (long
    words are the rare ones), and rare words are the ones that find the topic.
    """
    seen: dict[str, str] = {}
    for raw in _WORD.findall(question):
        word = re.sub(r"['’]s$", "", raw.strip(".'’-"))
        folded = word.casefold()
        if len(word) < 2 and not word.isdigit():
            continue
        if folded in STOPWORDS or folded in FILLER_WORDS or folded in seen:
            continue
        seen[folded] = word
    ranked = sorted(seen.values(), key=len, reverse=True)  # stable: ties keep their order
    return ranked[:limit]


def is_follow_up(question: str) -> bool:
    """Whether the question refers back ("it", "they", "there") to the conversation."""
    return any(w.casefold() in _REFERENCES for w in _WORD.findall(question))


def topic_question(questions: Sequence[str]) -> str:
    """The earlier question a follow-up refers to: the last one, read together with the
    one before it when it was a follow-up too ("what is mercury?", "when was it
    discovered?", "who discovered it?"). ``questions``: the conversation's, oldest first."""
    if not questions:
        return ""
    last = " ".join(questions[-1].split())
    if len(questions) > 1 and is_follow_up(last):
        return f"{' '.join(questions[-2].split())} {last}"
    return last


def ranking_texts(question: str, previous: str) -> list[str]:
    """What the candidates' meaning is compared with: the question, and for a follow-up
    also the question read after the one before it ("which god was it named after?"
    alone names no topic)."""
    if previous and is_follow_up(question):
        return [question, f"{' '.join(previous.split())}\n{question}"]
    return [question]


def plan_search(
    keywords: Sequence[str],
    question: str,
    *,
    previous: str = "",
    context: str = "",
    max_terms: int = 8,
) -> SearchPlan:
    """Combine the model's ``keywords`` with the question's own words.

    ``previous``: the conversation's last question (a follow-up searches its words too);
    ``context``: the recent conversation as the keyword prompt saw it, so a keyword that
    resolves a follow-up ("Apple Records" for "did it fight the computer company?") is
    not taken for an unrelated one. At most ``max_terms`` searches.
    """
    related = frozenset(terms(f"{question}\n{context}", plural))
    accepted: list[str] = []
    unrelated: list[str] = []
    rejected: list[tuple[str, Verdict]] = []
    for keyword in keywords:
        judged = verdict(keyword, related)
        if judged == "ok":
            accepted.append(keyword)
            continue
        rejected.append((keyword, judged))
        if judged == "off topic":
            unrelated.append(keyword)
    # With a keyword that passed, the question's two likeliest words are a safety net; the
    # rest would mostly add neighbours for the ranking to sort out.
    # Beside them, words a keyword already holds come last: "Bike Chain" searched, "flaky"
    # finds what "chain" alone would not.
    covered = frozenset(terms(" ".join(accepted), plural))
    own = sorted(
        question_terms(question, limit=None), key=lambda w: set(terms(w, plural)) <= covered
    )
    own = own[: QUESTION_TERMS if not accepted else QUESTION_TERMS_BESIDE]
    follow_up = bool(previous) and is_follow_up(question)
    topic = question_terms(previous, TOPIC_TERMS) if follow_up else []
    # A question of nothing but stop words ("what is it?") is still searched as it is.
    search = _unique([*accepted, *own, *topic, *unrelated])[:max_terms] or _unique([question])
    # A follow-up's words say little ("when was it discovered?"); the question it follows
    # names the topic, so the ranking matches against that too.
    context_words = [" ".join(previous.split())] if follow_up else []
    return SearchPlan(
        topics=tuple(accepted or own or topic),
        search=tuple(search),
        lexical=tuple(_unique([*accepted, *context_words])),
        rejected=tuple(rejected),
    )


def _unique(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    kept: list[str] = []
    for item in items:
        folded = " ".join(item.split()).casefold()
        if folded and folded not in seen:
            seen.add(folded)
            kept.append(item)
    return kept
