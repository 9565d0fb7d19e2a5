"""Prompts of the answer pipeline, and the pure functions around them.

Nothing here does I/O: the orchestrator composes ``TOPIC_PROMPT | llm`` and
``SYNTHESIS_PROMPT | llm`` itself and uses these helpers to prepare the prompt variables
and to clean up what the model says:

* :func:`parse_keywords` turns a (messy) keyword reply into search keywords;
* :func:`format_history` and :func:`format_sources` render prompt variables;
* :class:`AnswerFilter` post-processes streamed answer tokens (drops ``<think>`` blocks and
  citations of sources that do not exist);
* :func:`sources_footer` and :func:`fallback_answer` write the parts the bot adds itself.

The ``*_MARKER`` phrases open the system messages. ``tests/fakes/ollama.py`` recognises
each prompt by its marker to pick a canned behaviour, so change them together.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from langchain_core.prompts import ChatPromptTemplate

from bot.domain import Source

__all__ = [
    "SUMMARY_MARKER",
    "SUMMARY_PROMPT",
    "SYNTHESIS_MARKER",
    "SYNTHESIS_PROMPT",
    "TOPIC_MARKER",
    "TOPIC_PROMPT",
    "AnswerFilter",
    "fallback_answer",
    "first_sentence",
    "format_history",
    "format_sources",
    "parse_keywords",
    "sources_footer",
]

# ---------------------------------------------------------------------------------------
# Prompt templates
# ---------------------------------------------------------------------------------------

TOPIC_MARKER = "You choose search keywords for a research assistant."
SYNTHESIS_MARKER = "You are a research assistant that answers from numbered sources."
SUMMARY_MARKER = "You keep the running summary of a conversation."

TOPIC_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            TOPIC_MARKER + "\n"
            "Reply with 1 to 3 short search keywords or phrases for the user's question, one "
            "per line, most important first, and nothing else: no preamble, no numbering, no "
            "quotes, no explanations.\n"
            "The first line is the primary topic, written like the title of a Wikipedia "
            'article, for example "Transformer (deep learning architecture)" or "Rust '
            '(programming language)".\n'
            'If the question is a follow-up ("what about its successor?", "who founded '
            'it?"), use the recent conversation to work out what it refers to and name that '
            "thing explicitly.",
        ),
        (
            "human",
            "Recent conversation (empty if this is the first question):\n{context}\n\n"
            "Question: {question}",
        ),
    ]
)
"""Keywords for the sources. Variables: ``question``, ``context`` (may be empty)."""

SYNTHESIS_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            SYNTHESIS_MARKER + "\n"
            "Answer the user's question briefly and accurately, in a short paragraph or a few "
            "bullet points, using ONLY the numbered sources.\n"
            "Cite a source right after the claim it supports, as [1] or [2]; cite only "
            "numbers that appear in the sources.\n"
            "If the sources do not cover the question, or cover only part of it, say so "
            "plainly and answer only the part they cover; never guess.\n"
            "Do not end with a list of sources or links: the bot appends one.\n"
            "Use the conversation summary and the recent conversation only to understand the "
            "question, never as evidence. If the notes affect the answer (a source was "
            "unavailable, the question was shortened), say so in one short sentence.\n"
            "Any section may be empty.",
        ),
        (
            "human",
            "Conversation summary:\n{summary}\n\n"
            "Recent conversation:\n{history}\n\n"
            "Sources:\n{sources}\n\n"
            "Source statistics:\n{analysis}\n\n"
            "Notes:\n{notes}\n\n"
            "Question: {question}",
        ),
    ]
)
"""The answer. Variables: ``question``, ``summary``, ``history``, ``sources``, ``analysis``,
``notes``; every one but ``question`` may be empty."""

SUMMARY_PROMPT = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            SUMMARY_MARKER + "\n"
            "Update the previous summary with the new exchanges. Keep it concise (at most "
            "five sentences): the topics the user asked about, the key facts given, and "
            "anything the user said about themselves or their goals. Reply with the "
            "summary only.",
        ),
        (
            "human",
            "Previous summary (may be empty):\n{summary}\n\n"
            "New exchanges:\n{transcript}\n\n"
            "Updated summary:",
        ),
    ]
)
"""The running summary. Variables: ``summary`` (previous, may be empty), ``transcript``."""

# ---------------------------------------------------------------------------------------
# parse_keywords
# ---------------------------------------------------------------------------------------

_MAX_KEYWORD_CHARS = 80
_MAX_FALLBACK_CHARS = 100

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"^\s*```\w*\s*$")
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
# Parenthetical notes a model adds after a keyword: "BERT (secondary keyword)".
_META_PAREN = re.compile(
    r"\s*\((?:[^()]*\b(?:primary|secondary|main|topic|keyword|optional|related|"
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
# Discord/Slack mentions and channel links (<@123>, <@U1>, <#C1|general>, <!here>), URLs.
_QUESTION_NOISE = re.compile(r"<[@#!][^>\s]*>|<https?://[^>\s]*>|https?://\S+")


def _strip_thinking(text: str) -> str:
    text = _THINK_BLOCK.sub("\n", text)
    # A closing tag with no opening one: the chat template opened the block, so
    # everything before it is reasoning.
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    # An opening tag that never closes: the rest is unfinished reasoning.
    opened = _THINK_OPEN.search(text)
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
        text = _truncate_words(text, _MAX_KEYWORD_CHARS, ellipsis=False)
    return text


def _truncate_words(text: str, max_chars: int, *, ellipsis: bool) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when possible."""
    if len(text) <= max_chars:
        return text
    room = max_chars - 1 if ellipsis else max_chars
    if room <= 0:
        return "…"[:max_chars]
    cut = text[:room]
    space = cut.rfind(" ")
    if not text[room].isspace() and space >= room // 2:
        cut = cut[:space]
    cut = cut.rstrip(" ,;:-–—")
    return cut + "…" if ellipsis else cut


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
_FILLER_WORDS = frozenset(
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
    content = [w for w in words if w and w.casefold().replace("'", "") not in _FILLER_WORDS]
    if not content:
        return [_truncate_words(text, _MAX_FALLBACK_CHARS, ellipsis=False)]
    primary = " ".join(content[:_FALLBACK_WORDS])
    primary = _truncate_words(primary, _MAX_FALLBACK_CHARS, ellipsis=False)
    return [primary, " ".join(content[:2])] if len(content) > 2 else [primary]


def parse_keywords(text: str, question: str, *, limit: int = 3) -> list[str]:
    """Extract search keywords from the model's reply to :data:`TOPIC_PROMPT`.

    Survives what real models do around the requested "one keyword per line": preambles
    and closing remarks, numbering and bullets, quotes, backticks and bold, comma-separated
    lists, ``Keywords:`` labels, trailing explanations, ``<think>`` blocks (also unclosed
    ones) and duplicates differing only in case. The first keyword is the primary topic.

    Returns at most ``limit`` keywords. When nothing usable is left, falls back to the
    question's content words (mentions, links, question and stop words removed; see
    :func:`_fallback_keyword`), so the list is empty only when the question has no
    visible characters.

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
    return keywords or _fallback_keyword(question)[:limit]


# ---------------------------------------------------------------------------------------
# Prompt variables
# ---------------------------------------------------------------------------------------

_SOURCE_NAMES = {"wikipedia": "Wikipedia", "hackernews": "Hacker News"}
_CITED_HEADING = "Sources:"
_CONSULTED_HEADING = "Sources consulted (none cited directly):"
_FOOTER_START = re.compile(
    r"\n+(?:" + re.escape(_CITED_HEADING) + "|" + re.escape(_CONSULTED_HEADING) + r")\n\[\d+\]"
)


def _strip_footer(answer: str) -> str:
    match = _FOOTER_START.search(answer)
    return answer[: match.start()] if match else answer


def _render_turn(question: str, answer: str) -> str:
    return f"User: {question}\nAssistant: {answer}"


def format_history(turns: Sequence[tuple[str, str]], *, max_chars: int = 2000) -> str:
    """Render ``(question, answer)`` pairs, oldest first, as ``User:``/``Assistant:`` lines.

    Keeps the newest turns that fit in ``max_chars`` (the result is never longer). If even
    the newest turn alone does not fit, it is shortened: the answer first, then the
    question. The sources footer the bot appended to an answer is left out.
    """
    if max_chars <= 0:
        return ""
    kept: list[str] = []
    used = 0
    for question, answer in reversed(turns):
        q = question.strip()
        a = _strip_footer(answer).strip()
        block = _render_turn(q, a)
        cost = len(block) + (1 if kept else 0)
        if used + cost <= max_chars:
            kept.append(block)
            used += cost
            continue
        if not kept:
            kept.append(_shorten_turn(q, a, max_chars))
        break
    return "\n".join(reversed(kept))


def _shorten_turn(question: str, answer: str, max_chars: int) -> str:
    overhead = len(_render_turn("", ""))
    room = max_chars - overhead
    if room <= 0:
        return _render_turn("", "")[:max_chars]
    q = _truncate_words(question, max(room // 3, room - len(answer)), ellipsis=True)
    a = _truncate_words(answer, room - len(q), ellipsis=True)
    return _render_turn(q, a)[:max_chars]


def _source_label(source: Source) -> str:
    return _SOURCE_NAMES.get(source.source, source.source.replace("_", " ").title())


def format_sources(items: Sequence[tuple[Source, str]]) -> str:
    """Render numbered sources for :data:`SYNTHESIS_PROMPT`.

    Each ``(source, text)`` becomes ``[n] Title (Wikipedia)``, the URL, then the text;
    blocks are separated by a blank line. No items gives a line saying so.
    """
    if not items:
        return "(no sources were found)"
    blocks = []
    for source, text in items:
        body = re.sub(r"\n\s*\n+", "\n", text.strip())
        lines = [f"[{source.n}] {source.title} ({_source_label(source)})", source.url]
        if body:
            lines.append(body)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------
# AnswerFilter
# ---------------------------------------------------------------------------------------

_TAGS = ("<think>", "</think>")
_TAG = re.compile(r"<(/?)think>", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"</think>", re.IGNORECASE)
# A citation or citation group: [1], [1, 2], [1][2] (two groups), [1-3], [1–3; 5].
_CITATION = re.compile(r"\[\s*\d{1,3}(?:\s*[,;\-–]\s*\d{1,3})*\s*\]")
# Everything that can still grow into a citation once more text arrives.
_CITATION_PREFIX = re.compile(r"\[\s*(?:\d{1,3}(?:\s*[,;\-–]\s*(?:\d{1,3})?)*\s*)?")
_MAX_CITATION_TAIL = 40
_MAX_RANGE = 50
_HSPACE = " \t"
_PUNCT_AFTER_CITATION = ".,;:!?)]}\n"


def _tag_prefix_len(text: str, tags: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``tags``."""
    longest = max(len(t) for t in tags) - 1
    for size in range(min(len(text), longest), 0, -1):
        suffix = text[-size:].lower()
        if any(len(t) > size and t.startswith(suffix) for t in tags):
            return size
    return 0


def _citation_numbers(group: str) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"\s*[,;]\s*", group.strip("[] \t")):
        bounds = re.split(r"\s*[-–]\s*", part)
        values = [int(b) for b in bounds if b]
        if len(values) == 2 and 0 <= values[1] - values[0] <= _MAX_RANGE:
            values = list(range(values[0], values[1] + 1))
        for value in values:
            if value not in numbers:
                numbers.append(value)
    return numbers


class _ThinkStripper:
    """Stage one: removes ``<think>...</think>`` blocks and the whitespace after them."""

    def __init__(self) -> None:
        self._pending = ""
        self._in_think = False
        self._lstrip = True  # drop leading whitespace of the answer and after a block

    def feed(self, chunk: str, *, final: bool = False) -> str:
        text = self._pending + chunk
        self._pending = ""
        out: list[str] = []
        while text:
            if self._in_think:
                close = _CLOSE_TAG.search(text)
                if close is None:
                    keep = 0 if final else _tag_prefix_len(text, ("</think>",))
                    self._pending = text[len(text) - keep :] if keep else ""
                    break
                self._in_think = False
                self._lstrip = True
                text = text[close.end() :]
                continue
            tag = _TAG.search(text)
            if tag is None:
                keep = 0 if final else _tag_prefix_len(text, _TAGS)
                out.append(self._emit(text[: len(text) - keep]))
                self._pending = text[len(text) - keep :]
                break
            out.append(self._emit(text[: tag.start()]))
            # An opening tag starts a block; a stray closing tag ends reasoning the chat
            # template opened, so both are dropped and the whitespace after them too.
            self._in_think = tag.group(1) == ""
            self._lstrip = True
            text = text[tag.end() :]
        return "".join(out)

    def _emit(self, text: str) -> str:
        if self._lstrip:
            text = text.lstrip()
            if text:
                self._lstrip = False
        return text


class _CitationFilter:
    """Stage two: keeps valid citations, drops invalid ones and tidies the gap they leave."""

    def __init__(self, valid: Collection[int]) -> None:
        self._valid = frozenset(valid)
        self.cited: list[int] = []
        self._pending = ""  # a possible citation start, not yet decidable
        self._held_space = ""  # spaces that may precede a citation to be removed
        self._removed = False  # the last thing seen was a removed citation
        self._last = ""  # the last character emitted ("" at the start)

    def feed(self, chunk: str, *, final: bool = False) -> str:
        text = self._pending + chunk
        self._pending = ""
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch in _HSPACE:
                j = i
                while j < n and text[j] in _HSPACE:
                    j += 1
                self._space(text[i:j])
                i = j
            elif ch == "[":
                match = _CITATION.match(text, i)
                # The length cap keeps the result independent of how the text was chunked:
                # a longer candidate would already have been let through while streaming.
                if match is not None and match.end() - i <= _MAX_CITATION_TAIL:
                    self._citation(match.group(), out)
                    i = match.end()
                    continue
                prefix = _CITATION_PREFIX.match(text, i)
                tail = n - i
                if (
                    not final
                    and prefix is not None
                    and prefix.end() == n
                    and tail <= _MAX_CITATION_TAIL
                ):
                    self._pending = text[i:]
                    break
                self._plain("[", out)
                i += 1
            else:
                j = i
                while j < n and text[j] not in _HSPACE and text[j] != "[":
                    j += 1
                self._plain(text[i:j], out)
                i = j
        if final:
            if not self._removed:
                out.append(self._held_space)
            self._held_space = ""
        return "".join(out)

    def _space(self, run: str) -> None:
        if not self._removed:
            self._held_space += run
        elif self._last in ("", "\n") or self._held_space:
            # The removed citation opened a line, or already had a space before it.
            pass
        else:
            self._held_space = run

    def _plain(self, text: str, out: list[str]) -> None:
        if self._removed and text[0] in _PUNCT_AFTER_CITATION:
            self._held_space = ""  # "word [9]." -> "word."
        out.append(self._held_space)
        out.append(text)
        self._held_space = ""
        self._removed = False
        self._last = text[-1]

    def _citation(self, group: str, out: list[str]) -> None:
        kept = [k for k in _citation_numbers(group) if k in self._valid]
        if not kept:
            self._removed = True
            return
        for k in kept:
            if k not in self.cited:
                self.cited.append(k)
        self._plain("[" + ", ".join(str(k) for k in kept) + "]", out)


class AnswerFilter:
    """Post-processes the model's streamed answer before it is shown.

    * drops ``<think>...</think>`` reasoning blocks, even when a tag is split across
      chunks; an unclosed block hides the rest of the stream, a stray ``</think>`` is
      dropped;
    * keeps citations of the ``valid`` source numbers and removes the others, also in
      groups (``[1, 9]`` becomes ``[1]``, ``[8-9]`` disappears; kept groups are written
      ``[1, 2]``), tidying the space they leave (``word [9].`` becomes ``word.``);
    * strips leading whitespace of the answer.

    Only a short ambiguous tail is held back (a partial tag, a possible citation start of
    at most 40 characters, or trailing spaces); everything else is returned at once.
    Feeding the same text in any chunking gives the same output.
    """

    def __init__(self, valid: Collection[int]) -> None:
        self._think = _ThinkStripper()
        self._citations = _CitationFilter(valid)
        self._done = False

    def feed(self, chunk: str) -> str:
        """Take the next chunk of the answer; return the text that is safe to show now.

        Raises:
            RuntimeError: the stream was already flushed.
        """
        if self._done:
            raise RuntimeError("AnswerFilter.feed() after flush()")
        return self._citations.feed(self._think.feed(chunk))

    def flush(self) -> str:
        """End the stream and return whatever was held back (cleaned). Safe to call twice."""
        if self._done:
            return ""
        self._done = True
        return self._citations.feed(self._think.feed("", final=True), final=True)

    @property
    def cited(self) -> list[int]:
        """Valid citation numbers seen so far, in first-seen order."""
        return list(self._citations.cited)


# ---------------------------------------------------------------------------------------
# Text the bot writes itself
# ---------------------------------------------------------------------------------------


def sources_footer(sources: Sequence[Source], cited: Sequence[int]) -> str:
    """The list appended to an answer: ``Sources:`` then ``[n] Title — url`` lines.

    Lists the cited sources in number order. If none of ``cited`` is among ``sources``,
    lists every source under a heading saying they were consulted but not cited. No
    sources gives ``""``.
    """
    if not sources:
        return ""
    wanted = set(cited)
    chosen = sorted((s for s in sources if s.n in wanted), key=lambda s: s.n)
    heading = _CITED_HEADING
    if not chosen:
        chosen, heading = sorted(sources, key=lambda s: s.n), _CONSULTED_HEADING
    lines = [heading, *(f"[{s.n}] {s.title} — {s.url}" for s in chosen)]
    return "\n".join(lines)


def fallback_answer(sources: Sequence[tuple[Source, str]], *, reason: str, limit: int = 3) -> str:
    """The answer when the model is unavailable: the ``reason`` line, then the sources.

    Lists the first ``limit`` sources (they are expected best first) as
    ``[n] Title — url: first sentence.`` lines.
    """
    lines = [reason.strip()]
    if not sources:
        lines.append("No sources were found for this question.")
        return "\n".join(lines)
    for source, text in sources[: max(limit, 0)]:
        line = f"[{source.n}] {source.title} — {source.url}"
        sentence = first_sentence(text)
        if sentence:
            if sentence[-1] not in ".!?…":
                sentence += "."
            line += f": {sentence}"
        lines.append(line)
    return "\n".join(lines)


_ABBREVIATIONS = frozenset(
    {
        *("e.g", "i.e", "etc", "vs", "cf", "al", "approx", "ca", "c", "no", "fig"),
        *("mr", "mrs", "ms", "dr", "st", "mt", "ft", "prof", "jr", "sr", "inc", "ltd", "co"),
        *("corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct"),
        *("nov", "dec"),
    }
)
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)")


def _ends_sentence(text: str, end: int) -> bool:
    before = text[:end].rstrip("\"'”’)]")
    if before.endswith(("!", "?", "…")):
        pass
    elif before.endswith("."):
        word = re.search(r"(\S+)\.$", before)
        token = word.group(1).lower().lstrip("(\"'“‘") if word else ""
        if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
            return False
        if re.fullmatch(r"(?:[a-z]\.)+[a-z]", token):  # "U.S." "D.C."
            return False
    rest = text[end:].lstrip()
    return not rest or not rest[0].islower()


def first_sentence(text: str, *, max_chars: int = 240) -> str:
    """The first sentence of ``text`` (whitespace collapsed), at most ``max_chars`` long.

    Does not stop at common abbreviations ("e.g.", "Dr.", "U.S.") or initials. A sentence
    longer than ``max_chars`` is cut at a word boundary and ends with "…".
    """
    flat = " ".join(text.split())
    if not flat or max_chars <= 0:
        return ""
    sentence = flat
    for match in _SENTENCE_END.finditer(flat):
        if _ends_sentence(flat, match.end()):
            sentence = flat[: match.end()]
            break
    return _truncate_words(sentence, max_chars, ellipsis=True)
