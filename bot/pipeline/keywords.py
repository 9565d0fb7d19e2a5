"""Search keywords for a question, from the model's reply to the topic prompt.

One job: reading a (messy) reply to :data:`~bot.pipeline.prompts.TOPIC_PROMPT`.
:func:`reply_keywords` reads the reply the pipeline gets (JSON, JSON cut off by the token
limit, or text) and :func:`extract_keywords` a text one; whether a keyword is any good is
:mod:`bot.pipeline.search_plan`'s question. :func:`parse_keywords` also falls back to the
question's own content words when the reply holds none. Links are dropped from the
question; platform mentions (``<@123>``, ``<#C1|general>``, ``<!here>``) are not: removing
the bot's own mention from an inbound question is the platform adapters' job.
"""

from __future__ import annotations

import contextlib
import json
import re

from bot.pipeline.text import THINK_BLOCK, THINK_CLOSE, THINK_OPEN, truncate_words

__all__ = ["extract_keywords", "parse_keywords", "reply_keywords"]

_MAX_KEYWORD_CHARS = 80
_MAX_FALLBACK_CHARS = 100

_FENCE = re.compile(r"^\s*```\w*\s*$")
_FENCE_LINES = re.compile(r"^\s*```\w*\s*$", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+")
# "1." "1)" "(1)" "#1" "-" "*" "•" list markers, followed by a space or the line's end (so
# "3.14" and "1984 (novel)" survive).
_LIST_MARKER = re.compile(r"^(?:[-*•·+▪►–—]|\(?\d{1,2}[.)]|\(\d{1,2}\)|#\d{1,2}[.):]?)(?:\s+|$)")
# "Keywords: a, b", "Primary topic: X", "Keyword 1: X", "Search terms -> X".
_LABEL = re.compile(
    r"^(?:the\s+)?(?:"
    r"(?:(?:primary|main|secondary|other|search|suggested|relevant)\s+)*"
    r"(?:keywords?|key\s*words?|terms?|topics?|quer(?:y|ies)|phrases?|answer|output)"
    r"|primary|main|secondary|other|additional|extra"
    r")\s*\d*\s*(?::|->|=>|=)\s*",
    re.IGNORECASE,
)
# Chatty lines that are not keywords ("Sure! Here are...", "Let me know..."). The weak
# openers also start real titles ("This American Life", "OK Computer"), so they mark prose
# only in a long line or a sentence.
_CHATTY = re.compile(
    r"^(?:(?:sure|okay|ok|certainly|great|absolutely|alright|hmm+|well|yes|no problem)"
    r"\s*[,!.:]|here(?:'s|’s| is| are)\b|let me\b|let's\b|i(?:'m|'d|'ll|'ve|’m|’d|’ll|’ve)\b|"
    r"of course\b|hope (?:this|these|that)\b|feel free\b|based on\b|note\s*:|"
    r"(?:these|those) (?:are|keywords|terms|should|will|cover)\b)",
    re.IGNORECASE,
)
_KEYWORD_WORD = re.compile(r"\bkey ?words?\b|\bsearch (?:terms?|quer(?:y|ies))\b", re.I)
_CHATTY_WEAK = re.compile(r"^(?:this|these|the following|below|i|if|as)\b", re.IGNORECASE)
# A trailing explanation: "transformer - the architecture ...".
_EXPLANATION_DASH = re.compile(r"\s+[-–—]+\s+")
_BOLD = re.compile(r"\*\*(.+?)\*\*|__(.+?)__")
_QUOTED_HEAD = re.compile(r"""^(["“”'‘’`«])(.+?)(["“”'‘’`»])(?=\s|$|[,;:.(\-–—])""")
_QUOTE_CHARS = "\"'“”‘’`«»"
_EDGE_JUNK = " \t*_~,;:!?|>"
_LINK = re.compile(r"\]\(|\(#|\(?<?https?://|\bwww\.", re.IGNORECASE)
# Parenthetical notes a model adds after a keyword: "BERT (secondary keyword)", or the
# label of a source entry it copied: "Transformer (Wikipedia)".
_META_PAREN = re.compile(
    r"\s*\((?:[^()]*\b(?:primary|secondary|main|topic|keyword|optional|related|wikipedia|"
    r"e\.g\.|i\.e\.|if|for)\b[^()]*)\)\s*$",
    re.IGNORECASE,
)
_GENERIC = frozenset(
    {
        "keyword",
        "keywords",
        "search keywords",
        "search terms",
        "topic",
        "topics",
        "primary topic",
        "none",
        "n/a",
        "null",
    }
)
# Links, bare or in a platform's angle brackets (<https://x|label>). Mentions of the bot
# (<@123>, <#C1|general>, <!here>) are not noise to strip here: removing the bot's own
# mention from an inbound question is the platform adapter's job.
_QUESTION_NOISE = re.compile(r"<https?://[^>\s]*>|https?://\S+")


def _strip_thinking(text: str) -> str:
    text = THINK_BLOCK.sub("\n", text)
    # A closing tag with no opening one: the chat template opened the block, so
    # everything before it is reasoning.
    closes = list(THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    # An opening tag that never closes: the rest is unfinished reasoning.
    opened = THINK_OPEN.search(text)
    if opened is not None:
        text = text[: opened.start()]
    return text


def _is_prose(line: str) -> bool:
    """A sentence addressed to the reader rather than a keyword."""
    words = line.split()
    if _CHATTY.match(line) or line.endswith(":"):
        return True
    sentence = line[-1:] in ".!?"
    if _CHATTY_WEAK.match(line) and (sentence or len(words) >= 5):
        return True
    if len(words) >= 7 and sentence:
        return True
    return len(words) >= 4 and line.endswith("?")


def _introduces_keywords(head: str) -> bool:
    """Whether the text before a colon announces keywords ("The keywords are: ...")."""
    if _CHATTY.match(head):
        return True
    return len(head.split()) >= 3 and _KEYWORD_WORD.search(head) is not None


def _trim_trailing_period(text: str) -> str:
    # Keep the period of an abbreviation ending in a capital initial ("D.C.") or an ellipsis.
    while text.endswith(".") and not re.search(r"(?:\b[A-Z]\.|\.\.\.)$", text):
        text = text[:-1].rstrip()
    return text


def _clean_keyword(raw: str) -> str:
    text = raw.strip()
    bold = _BOLD.search(text)
    if bold is not None and bold.start() <= 2:
        # "**Transformer**: the architecture..." -> the bold part is the keyword.
        text = (bold.group(1) or bold.group(2) or "").strip()
    quoted = _QUOTED_HEAD.match(text)
    if quoted is not None:
        # '"Transformer" - the architecture...' -> the quoted part is the keyword.
        text = quoted.group(2)
    # A link is where the model began copying a source entry: "Transformer (Wikipedia)](#
    # https://en.wikipedia.org/...)" or "[Transformer](https://...)"; the title before it
    # is the keyword.
    before_link, *link = _LINK.split(text, maxsplit=1)
    if link:
        text = before_link.strip(_EDGE_JUNK + "[]")
    text = _EXPLANATION_DASH.split(text, maxsplit=1)[0]
    head, sep, tail = text.partition(": ")
    if sep and len(tail.split()) >= 4:
        # "Attention: the mechanism that ..." but not "Star Wars: Episode IV".
        text = head
    text = _META_PAREN.sub("", text)
    text = text.replace("**", "").replace("__", "")
    text = text.strip(_EDGE_JUNK + _QUOTE_CHARS)
    text = _trim_trailing_period(text).strip(_EDGE_JUNK + _QUOTE_CHARS)
    text = " ".join(text.split())
    if len(text) > _MAX_KEYWORD_CHARS:
        text = truncate_words(text, _MAX_KEYWORD_CHARS, ellipsis=False)
    return text


def _candidate_lines(text: str) -> list[tuple[str, bool]]:
    """Lines that may hold keywords, each with whether commas separate several of them."""
    candidates: list[tuple[str, bool]] = []
    for raw_line in text.splitlines():
        if _FENCE.match(raw_line):
            continue
        line = _HEADING.sub("", raw_line.strip()).strip()
        if not line:
            continue
        listed = False
        marker = _LIST_MARKER.match(line)
        if marker is not None:
            line = line[marker.end() :].strip()
            listed = True
        labelled = False
        label = _LABEL.match(line.lstrip("*_ "))
        if label is not None:
            line = line.lstrip("*_ ")[label.end() :].strip()
            labelled = True
        elif not listed:
            head, colon, tail = line.partition(":")
            if colon and tail.strip() and _introduces_keywords(head):
                # "Sure! Here are the keywords: a, b, c"
                line, labelled = tail.strip(), True
            elif _is_prose(line):
                continue
        if line.startswith("(") and line.endswith(")"):
            continue  # "(Note: ...)"
        if line:
            candidates.append((line, labelled))
    return candidates


def _split_commas(line: str) -> list[str]:
    parts = [p for p in re.split(r"\s*[,;]\s*", line) if p.strip()]
    return parts or [line]


# Words that carry no topic. Without an LLM the question itself becomes the search, and
# both search APIs want every word to match, so these must go.
FILLER_WORDS = frozenset(
    """
    a about am an and any are as at be been but by can could did do does doing explain for
    from give has have how i in into is it its me mean means my of on or please should so
    tell than that the their them then there these they this those to us vs versus was we
    were what whats when where which who whom whose why will with work works would you your
    difference differences different differ between compare compared
    """.split()
)
_FALLBACK_WORDS = 4


def _fallback_keyword(question: str) -> list[str]:
    """Keywords made from the question alone, for when the model gave none.

    The content words (up to four) form the primary query; when there are more than two,
    the first two also go out alone, because a long query often matches nothing.
    """
    text = _QUESTION_NOISE.sub(" ", question)
    text = " ".join(text.split()).strip(_EDGE_JUNK + _QUOTE_CHARS + ".")
    if not text:
        text = " ".join(question.split())
    if not text:
        return []
    words = [w.strip(_EDGE_JUNK + _QUOTE_CHARS + ".,;:!?") for w in text.split()]
    content = [w for w in words if w and w.casefold().replace("'", "") not in FILLER_WORDS]
    if not content:
        return [truncate_words(text, _MAX_FALLBACK_CHARS, ellipsis=False)]
    primary = " ".join(content[:_FALLBACK_WORDS])
    primary = truncate_words(primary, _MAX_FALLBACK_CHARS, ellipsis=False)
    return [primary, " ".join(content[:2])] if len(content) > 2 else [primary]


def parse_keywords(text: str, question: str, *, limit: int = 3) -> list[str]:
    """Extract search keywords from the model's reply to :data:`TOPIC_PROMPT`.

    Survives what real models do around the requested keywords: preambles and closing
    remarks, numbering and bullets, quotes, backticks and bold, comma-separated lists,
    ``Keywords:`` labels, trailing explanations, ``<think>`` blocks (also unclosed ones)
    and duplicates differing only in case. The first keyword is the primary topic.

    Returns at most ``limit`` keywords. When nothing usable is left, falls back to the
    question's content words (links, question and stop words removed; see
    :func:`_fallback_keyword`), so the list is empty only when the question has no
    visible characters. Platform mentions (``<@123>``) are not removed here: the adapters
    strip the bot's mention before the question reaches the pipeline.

    Raises:
        ValueError: ``limit`` is smaller than 1.
    """
    return extract_keywords(text, limit=limit) or _fallback_keyword(question)[:limit]


def extract_keywords(text: str, *, limit: int = 3) -> list[str]:
    """The keywords in a reply written as text (see :func:`parse_keywords`); maybe none.

    Raises:
        ValueError: ``limit`` is smaller than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    candidates = _candidate_lines(_strip_thinking(text))
    # Commas separate keywords on a labelled line or when everything is on one line;
    # elsewhere they belong to the keyword ("Washington, D.C.").
    single_line = len(candidates) == 1
    keywords: list[str] = []
    seen: set[str] = set()
    for line, labelled in candidates:
        parts = _split_commas(line) if labelled or single_line else [line]
        for part in parts:
            keyword = _clean_keyword(part)
            folded = keyword.casefold()
            if not keyword or folded in seen or folded in _GENERIC:
                continue
            if not any(ch.isalnum() for ch in keyword):
                continue
            seen.add(folded)
            keywords.append(keyword)
            if len(keywords) == limit:
                return keywords
    return keywords


def reply_keywords(text: str, *, limit: int = 3, truncated: bool = False) -> list[str]:
    """The keywords in a reply to the keyword call, JSON or not; maybe none.

    The call asks for :data:`~bot.pipeline.prompts.KEYWORD_SCHEMA`, but a server may
    ignore that, and a grammar only forces the shape: a model's prose or numbered list
    then arrives inside the strings. So each string is read like a text reply. A reply
    cut off by the token limit (``truncated``, or JSON that never closes) keeps only its
    complete keywords: the cut one is half a word.

    Raises:
        ValueError: ``limit`` is smaller than 1.
    """
    text = _strip_thinking(text)
    items = _json_items(text)
    if items is None:
        if truncated:
            # The last line is where the cut fell.
            text = text.rstrip("\n").rpartition("\n")[0]
        return extract_keywords(text, limit=limit)
    keywords: list[str] = []
    for item in items:
        for keyword in extract_keywords(item, limit=limit):
            if keyword.casefold() not in (k.casefold() for k in keywords):
                keywords.append(keyword)
    return keywords[:limit]


# A complete JSON string literal; in a reply that was cut off, the cut one never matches.
_JSON_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_JSON_START = re.compile(r"^\s*(?:```\w*\s*)?[{\[]")


def _json_items(text: str) -> list[str] | None:
    """The strings of a JSON reply (``{"keywords": [...]}``, a list, or a cut-off one);
    None when the reply is not JSON."""
    if _JSON_START.match(text) is None:
        return None
    body = _FENCE_LINES.sub("", text).strip()
    try:
        value = json.loads(body)
    except ValueError:
        if '"' not in body:
            return None  # "[Mercury]": text in brackets, not JSON
        # Cut off by the token limit: keep the strings that closed, but not the key.
        opened = body.find("[")
        return _strings(body[opened:]) if opened >= 0 else []
    if isinstance(value, dict):
        value = value.get("keywords", next(iter(value.values()), None) if value else None)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def _strings(text: str) -> list[str]:
    found = []
    for literal in _JSON_STRING.findall(text):
        with contextlib.suppress(ValueError):  # a bad escape: that string is lost
            found.append(json.loads(literal))
    return found
