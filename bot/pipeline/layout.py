"""The streaming filter that takes out of the answer what the model copied from its prompt.

One job: real models copy the prompt's layout into the answer: a second sources list
("[1] Title (Wikipedia)" and a URL, often invented), section headings ("Source
statistics:"), the placeholder "(none)", and a base model may echo the system prompt whole.
The bot renders its own Sources list and notices, so such lines are dropped, and
:attr:`LayoutFilter.echoed` tells the caller that the prompt's instructions came back.

It works line by line on the text after the reasoning blocks are gone and before citations
are checked (a copied "[7] Title" line must still show its number). A line is held back
only while it can still turn into one of the prompt's own lines or a source entry;
everything else passes at once, so the answer still streams. Feeding the same text in any
chunking gives the same output.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["LayoutFilter", "PromptLines", "normal_line"]

# The bot's own section headings (the prompt's and the rendered reply's), and the roles of
# its conversation transcript: a line that starts with one is layout, whatever follows it
# on the line. (A base model that echoes the prompt goes on to echo the transcript.)
HEADINGS = (
    "conversation summary:",
    "recent conversation:",
    "user:",
    "assistant:",
    "sources:",
    "source statistics:",
    "notes:",
    "question:",
    "references:",
    "sources consulted",
)
# Phrases of the statistics section (prompts.describe_report): a line holding one is a
# copy of it, whatever numbers the model put in ("7 articles (wikipedia: 10); average
# keyword relevance 0.7; frequent terms: ..." came back in 10 of 67 SmolLM2 answers).
SIGNATURES = ("average keyword relevance", "frequent terms:")
# How such a line starts, so it is held until it is whole: "7 articles (".
_STATISTICS_START = re.compile(r"^\d{1,4}(?: (.*))?$")
_STATISTICS_WORDS = ("articles (", "article (")
# The prompt's placeholders for an empty section.
PLACEHOLDERS = ("(none)", "(not available)", "(no sources were found)")
# Markdown a model puts around a copied line: "## ", "**", "- ", "> ", "1. " (or a bare
# "1." with nothing after it yet).
_DECORATION = re.compile(r"^(?:[#>*_\-•]+\s*|\d{1,2}[.)](?:\s+|$))+|[*_]+$")
_SPACES = re.compile(r"\s+")
# A copied source entry: "[3] Title", then its label, a URL or the bot's dash, or nothing.
_ENTRY = re.compile(r"^\[(\d{1,3})\]\s*(.*)$")
_ENTRY_TAIL = re.compile(r"\((?:wikipedia|hacker news)\)|https?://|\s[—–-]\s", re.IGNORECASE)
# The start of a numbered list item, not yet followed by its text.
_NUMBERING = re.compile(r"^\d{1,2}[.)]?$")
_URL_LINE = re.compile(r"^<?https?://\S+>?$", re.IGNORECASE)
# Echoed instructions: this many of the system prompt's lines make an echo.
ECHO_LINES = 2
# The answer's last line, cut off while it copied a prompt line, is dropped from this many
# characters on (shorter, it may be the model's own words that start like a source's).
MIN_CUT_COPY = 20
_SENTENCE_ENDS = (".", "!", "?", '"', "”", ")")


def _may_be_statistics(partial: str) -> bool:
    """Whether a line starting with ``partial`` may be a copy of the statistics line."""
    start = _STATISTICS_START.match(partial)
    if start is None:
        return False
    rest = start.group(1) or ""
    return any(w.startswith(rest) or rest.startswith(w) for w in _STATISTICS_WORDS)


def normal_line(line: str) -> str:
    """A line as compared with the prompt's (and, in :mod:`bot.pipeline.repeats`, with the
    answer's own sentences): decoration off, spaces collapsed, casefolded."""
    flat = _SPACES.sub(" ", line).strip()
    return _DECORATION.sub("", flat).strip().casefold()


@dataclass(frozen=True, slots=True)
class PromptLines:
    """What the model was shown, as the filter compares lines with it.

    ``instructions`` are the system message's lines (an echo of them is a failure of the
    model); ``shown`` the lines of the sections it must not copy (the sources, their URLs,
    the statistics, the notes); ``titles`` the numbered sources' titles, for copied
    entries with invented URLs. The conversation is left out: repeating an earlier answer
    is not copying the layout (its transcript's ``User:`` lines are, see :data:`HEADINGS`).
    """

    instructions: frozenset[str]
    shown: frozenset[str]
    titles: dict[int, str]

    @classmethod
    def of(
        cls, system: str, sections: Iterable[str], titles: Iterable[tuple[int, str]] = ()
    ) -> PromptLines:
        def lines(text: str) -> set[str]:
            return {n for n in (normal_line(line) for line in text.splitlines()) if n}

        shown = set(PLACEHOLDERS)
        for section in sections:
            shown |= lines(section)
        return cls(
            frozenset(lines(system)),
            frozenset(shown),
            {n: normal_line(title) for n, title in titles},
        )

    def can_become(self, partial: str) -> bool:
        """Whether a line that starts with ``partial`` (normalised) may still be dropped."""
        partial = partial.lstrip("<")
        if not partial or _NUMBERING.match(partial):
            return True
        if any(h.startswith(partial) or partial.startswith(h) for h in HEADINGS):
            return True
        if partial.startswith(("[", "http")) or "http".startswith(partial):
            return True
        if _may_be_statistics(partial):
            return True
        return self.begun(partial) is not None

    def begun(self, partial: str) -> Literal["instructions", "shown"] | None:
        """Which prompt lines (:attr:`instructions`, then :attr:`shown`) have one that
        ``partial`` (normalised) is the start of; None when none has."""
        if any(line.startswith(partial) for line in self.instructions):
            return "instructions"
        if any(line.startswith(partial) for line in self.shown):
            return "shown"
        return None


class LayoutFilter:
    """Drops the lines of the answer that copy the prompt or the bot's own rendering.

    A line is dropped when it is one of the prompt's lines, starts with one of the bot's
    headings, holds a phrase of the statistics section (:data:`SIGNATURES`, whatever
    numbers come with it), is a placeholder such as ``(none)``, is a source entry (``[n]``
    and the title of source n, or a source label, a URL or a dash after it), or is a bare
    URL right after a dropped line. Blank lines around dropped ones are dropped too.
    """

    def __init__(self, prompt: PromptLines) -> None:
        self._prompt = prompt
        self._line = ""  # the current line, held back while it may still be dropped
        self._passing = False  # the current line was let through; the rest of it follows
        self._blank = ""  # newlines not yet shown: shown only before a kept line
        self._shown_any = False
        self._last_dropped = False
        self.echoed_lines = 0
        self.dropped: list[str] = []

    @property
    def echoed(self) -> bool:
        """Whether the model repeated its instructions (at least :data:`ECHO_LINES` lines)."""
        return self.echoed_lines >= ECHO_LINES

    def feed(self, chunk: str, *, final: bool = False) -> str:
        out: list[str] = []
        text = chunk
        while text:
            cut = text.find("\n")
            piece, text = (text, "") if cut < 0 else (text[:cut], text[cut + 1 :])
            if self._passing:
                out.append(piece)
            else:
                self._line += piece
            if cut >= 0:
                self._end_line(out)
        if not self._passing and self._line:
            if final:
                self._end_line(out, newline=False, last=True)
            elif not self._prompt.can_become(normal_line(self._line)):
                out.append(self._release(self._line))
                self._line = ""
                self._passing = True
        return "".join(out)

    def _end_line(self, out: list[str], *, newline: bool = True, last: bool = False) -> None:
        if self._passing:
            self._passing = False
            self._last_dropped = False
        elif self._line.strip():
            if self._copied(self._line) or (last and self._cut_copy(self._line)):
                self.dropped.append(self._line.strip())
                self._last_dropped = True
                self._blank = ""
            else:
                out.append(self._release(self._line))
                self._last_dropped = False
        self._line = ""
        if newline and self._shown_any:
            self._blank += "\n"

    def _release(self, text: str) -> str:
        """``text`` to show, after the blank lines held before it."""
        shown = self._blank + text
        self._blank = ""
        self._shown_any = True
        return shown

    def _cut_copy(self, line: str) -> bool:
        """Whether the answer's last line is a prompt line cut off mid-way (the stream was
        stopped while the model copied it): long enough to be more than a chance match,
        not a finished sentence, and the start of one of the prompt's lines."""
        normal = normal_line(line)
        if len(normal) < MIN_CUT_COPY or normal.endswith(_SENTENCE_ENDS):
            return False
        begun = self._prompt.begun(normal)
        if begun == "instructions":
            self.echoed_lines += 1
        return begun is not None

    def _copied(self, line: str) -> bool:
        normal = normal_line(line)
        if normal in self._prompt.instructions:
            self.echoed_lines += 1
            return True
        if normal in self._prompt.shown or normal.startswith(HEADINGS):
            return True
        if any(signature in normal for signature in SIGNATURES):
            return True
        if _URL_LINE.match(line.strip()):
            return self._last_dropped
        entry = _ENTRY.match(normal)
        if entry is None:
            return False
        title = self._prompt.titles.get(int(entry.group(1)))
        rest = entry.group(2)
        return rest == title or bool(_ENTRY_TAIL.search(rest))
