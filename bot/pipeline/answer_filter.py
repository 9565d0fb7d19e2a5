"""The streaming filter between the model's answer tokens and the user.

One job: :class:`AnswerFilter` cleans the answer while it streams, in stages: the first
drops ``<think>`` reasoning blocks, an optional :class:`~bot.pipeline.layout.LayoutFilter`
drops what the model copied from its prompt, and the last keeps citations of sources that
exist and removes the others, with the connecting word they leave dangling ("as [1] or
[9];" becomes "as [1];").
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from bot.pipeline.layout import LayoutFilter
from bot.pipeline.text import THINK_CLOSE, THINK_TAG, THINK_TAGS

__all__ = ["AnswerFilter"]

# A citation or citation group: [1], [1, 2], [1][2] (two groups), [1-3], [1–3; 5].
_CITATION = re.compile(r"\[\s*\d{1,3}(?:\s*[,;\-–]\s*\d{1,3})*\s*\]")
# Everything that can still grow into a citation once more text arrives.
_CITATION_PREFIX = re.compile(r"\[\s*(?:\d{1,3}(?:\s*[,;\-–]\s*(?:\d{1,3})?)*\s*)?")
_MAX_CITATION_TAIL = 40
_MAX_RANGE = 50
_HSPACE = " \t"
_PUNCT_AFTER_CITATION = ".,;:!?)]}\n"
# Words and marks that join citations ("[1] or [2]", "[1], [2]"): held back until the next
# token says whether the citation they lead to was removed, leaving them dangling.
_JOINERS = frozenset({"or", "and", "as", "see", "e.g.", "cf.", ",", ";", "&", "/"})


def _tag_prefix_len(text: str, tags: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``tags``."""
    longest = max(len(t) for t in tags) - 1
    for size in range(min(len(text), longest), 0, -1):
        suffix = text[-size:].lower()
        if any(len(t) > size and t.startswith(suffix) for t in tags):
            return size
    return 0


def _may_join(run: str) -> bool:
    lowered = run.lower()
    return any(word.startswith(lowered) for word in _JOINERS)


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
                close = THINK_CLOSE.search(text)
                if close is None:
                    keep = 0 if final else _tag_prefix_len(text, (THINK_TAGS[1],))
                    self._pending = text[len(text) - keep :] if keep else ""
                    break
                self._in_think = False
                self._lstrip = True
                text = text[close.end() :]
                continue
            tag = THINK_TAG.search(text)
            if tag is None:
                keep = 0 if final else _tag_prefix_len(text, THINK_TAGS)
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
        self._joiner = ""  # a joining word held back, with the space before it

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
                if j == n and not final and _may_join(text[i:j]):
                    self._pending = text[i:]  # "o" may become "or", "or" may become "orange"
                    break
                self._plain(text[i:j], out)
                i = j
        if final:
            if not self._removed:
                out.append(self._joiner + self._held_space)
            self._joiner = self._held_space = ""
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
            self._joiner = ""  # "[1] or [9];" -> "[1];"
        if text.lower() in _JOINERS:
            out.append(self._joiner)  # an earlier one is followed by this, not by a gap
            self._joiner = self._held_space + text
            self._held_space = ""
            self._removed = False
            self._last = text[-1]
            return
        out.append(self._joiner)
        self._joiner = ""
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

    * drops a joining word ("or", "and", ",") left dangling by a removed citation
      (``as [1] or [12];`` becomes ``as [1];``);
    * with a ``layout`` filter, drops the lines the model copied from its prompt.

    Only a short ambiguous tail is held back (a partial tag, a possible citation start of
    at most 40 characters, a joining word, trailing spaces, or a line that may still turn
    out to be copied from the prompt); everything else is returned at once.
    Feeding the same text in any chunking gives the same output.
    """

    def __init__(self, valid: Collection[int], layout: LayoutFilter | None = None) -> None:
        self._think = _ThinkStripper()
        self._layout = layout
        self._citations = _CitationFilter(valid)
        self._done = False

    def _after_think(self, text: str, *, final: bool = False) -> str:
        return text if self._layout is None else self._layout.feed(text, final=final)

    def feed(self, chunk: str) -> str:
        """Take the next chunk of the answer; return the text that is safe to show now.

        Raises:
            RuntimeError: the stream was already flushed.
        """
        if self._done:
            raise RuntimeError("AnswerFilter.feed() after flush()")
        return self._citations.feed(self._after_think(self._think.feed(chunk)))

    def flush(self) -> str:
        """End the stream and return whatever was held back (cleaned). Safe to call twice."""
        if self._done:
            return ""
        self._done = True
        text = self._after_think(self._think.feed("", final=True), final=True)
        return self._citations.feed(text, final=True)

    @property
    def cited(self) -> list[int]:
        """Valid citation numbers seen so far, in first-seen order."""
        return list(self._citations.cited)
