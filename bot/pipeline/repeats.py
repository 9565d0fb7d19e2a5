"""The streaming guard that stops an answer once the model starts writing it again.

One job: small models fall into loops. SmolLM2-135M, shown a worked answer, wrote a
sentence and then the same paragraph over and over until the word budget cut it, mid-
sentence, in a third of its turns. A sentence the answer already holds, written again, is
the sign: :class:`RepeatGuard` drops that copy, shows nothing after it, and sets
:attr:`RepeatGuard.looped` so the caller closes the model's stream (the rest would be more
of the same, at a token's cost each) and the answer ends on a whole sentence.

A sentence is held back only while it can still turn into one already written (its text so
far starts one of them); everything else passes at once, so the answer still streams.
Feeding the same text in any chunking gives the same output.

A loop is not always word for word: the model may write the paragraph again reworded ("The
Amazon Rainforest is losing its capacity to hold water because of rising temperatures"
after "... due to rising temperatures"; "The kernel was released as a fork of the GNU
kernel" after "The Linux kernel was released ..."). Such a sentence is only known when
it ends, by then shown, so it stays and the answer stops after it: its content words
(stemmed, as the ranking's) are at least :data:`REWORDED_OVERLAP` the same as an earlier
sentence's, and they cite the same sources. Only sentences of prose count (ended by a full
stop, a question or an exclamation mark): lines of code differ in a name or a number
("layer_1 = attention(q, k, v)  # step 1") and are no loop.
"""

from __future__ import annotations

import re

from bot.pipeline.layout import normal_line
from bot.pipeline.ranking import terms

__all__ = ["MIN_REPEAT_CHARS", "MIN_REPEAT_WORDS", "REWORDED_OVERLAP", "RepeatGuard"]

# A sentence this long (in words, or in characters: a line of links has few words),
# written twice, is a loop: short ones ("It is fast.") may honestly come back, in a list
# or a comparison.
MIN_REPEAT_WORDS = 6
MIN_REPEAT_CHARS = 60
# A sentence's closing mark, with the quotes or brackets that close after it.
_MARK = r"[.!?…][\"'”’)\]]*"
# Where a sentence ends: its mark before a space, or a line's end. The space stays with the
# next sentence.
_END = re.compile(_MARK + r"(?=\s)|\n")
_MARKER = re.compile(r"\s*\d{1,2}[.)]")
# A reworded repeat: the Jaccard overlap of two sentences' content words, each of at least
# REWORDED_TERMS of them. On SmolLM2-135M's answers, 0.7 finds a reworded loop in 14 and 15
# of 67; a good answer's closing summary ("In short, Mercury is the smallest planet and the
# closest to the Sun") shares less with the sentence it sums up (0.63 there).
REWORDED_OVERLAP = 0.7
REWORDED_TERMS = 5
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
_PROSE_END = re.compile(_MARK + r"\s*$")


class RepeatGuard:
    """Passes an answer's text through until it repeats one of its own sentences."""

    def __init__(self) -> None:
        self._written: set[str] = set()
        self._gists: list[tuple[frozenset[str], frozenset[str]]] = []
        self._sentence = ""  # the current sentence so far, shown or held
        self._held = ""  # its part not shown yet
        self.looped = False

    def feed(self, chunk: str) -> str:
        """The part of ``chunk`` to show; nothing once the answer has looped."""
        if self.looped:
            return ""
        out: list[str] = []
        text = chunk
        while text:
            end = self._end(self._sentence + text)
            if end is None:
                self._sentence += text
                self._held += text
                text = ""
                break
            used = end.end() - len(self._sentence)
            self._sentence += text[:used]
            self._held += text[:used]
            text = text[used:]
            if self._complete(out):
                return "".join(out)
        if self._held and not self._may_repeat(normal_line(self._sentence)):
            out.append(self._held)
            self._held = ""
        return "".join(out)

    @staticmethod
    def _end(text: str) -> re.Match[str] | None:
        """The end of the sentence ``text`` starts with, if it has one yet. (Searched from
        its start: its last mark may have waited for this chunk's space.)"""
        end = _END.search(text)
        # "2. " opens a list item; it does not end a sentence.
        while end is not None and _MARKER.fullmatch(text[: end.end()]):
            end = _END.search(text, end.end())
        return end

    def flush(self) -> str:
        """What is held at the end of the stream: a cut-off start of a repeat is dropped."""
        if self.looped:
            return ""
        held, self._held = self._held, ""
        normal = normal_line(self._sentence)
        self._sentence = ""
        if self._long(normal) and self._may_repeat(normal):
            return ""
        return held

    def _complete(self, out: list[str]) -> bool:
        """Ends the current sentence; True when it repeats one (the answer has looped)."""
        normal = normal_line(self._sentence)
        if normal in self._written and self._long(normal):
            self.looped = True
            self._held = ""
            return True
        sentence = self._sentence
        if normal:
            self._written.add(normal)
        out.append(self._held)
        self._sentence = self._held = ""
        if _PROSE_END.search(sentence) is None:
            return False
        gist = _gist(sentence)
        if any(_reworded(gist, earlier) for earlier in self._gists):
            self.looped = True
            return True
        self._gists.append(gist)
        return False

    def _may_repeat(self, partial: str) -> bool:
        # (An empty start, spaces or a list marker, may become anything; so may "2".)
        if partial.isdigit() and len(partial) <= 2:
            partial = ""
        return any(s.startswith(partial) and self._long(s) for s in self._written)

    @staticmethod
    def _long(sentence: str) -> bool:
        return len(sentence.split()) >= MIN_REPEAT_WORDS or len(sentence) >= MIN_REPEAT_CHARS


def _gist(sentence: str) -> tuple[frozenset[str], frozenset[str]]:
    """A sentence's content words and the sources it cites."""
    cited = frozenset(n.strip() for m in _CITATION.findall(sentence) for n in m.split(","))
    return frozenset(terms(_CITATION.sub(" ", sentence))), cited


def _reworded(
    gist: tuple[frozenset[str], frozenset[str]], earlier: tuple[frozenset[str], frozenset[str]]
) -> bool:
    (words, cited), (before, cited_before) = gist, earlier
    if cited != cited_before or min(len(words), len(before)) < REWORDED_TERMS:
        return False
    return len(words & before) / len(words | before) >= REWORDED_OVERLAP
