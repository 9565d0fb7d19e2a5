"""Plain-Markdown rendering of a :class:`~bot.contract.Reply`, as the terminal shows it.

    <body, a weakly supported citation shown as [3?]>

    Sources:
    [1] Title — https://...

    _Wikipedia was unavailable for this question._

The terminal is the operator's own window, so it shows each notice's operator hint (how
to fix it); a chat adapter passes ``operator=False`` and shows only the user line. A
terminal does not render Markdown either: it passes ``plain=True``, and the notices lose
their underscores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.contract import Notice, Reply, Source, WeakCitation

CITED_HEADING = "Sources:"
CONSULTED_HEADING = "Sources consulted (none cited directly):"
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def mark_weak(body: str, weak: Sequence[WeakCitation]) -> str:
    """``body`` with each weak citation shown as ``[n?]`` in the sentence that made it."""
    for sentence in dict.fromkeys(w.sentence for w in weak):
        numbers = {w.n for w in weak if w.sentence == sentence}

        def mark(match: re.Match[str], numbers: set[int] = numbers) -> str:
            parts = [p.strip() for p in match.group(1).split(",")]
            return "[" + ", ".join(p + "?" if int(p) in numbers else p for p in parts) + "]"

        at = body.find(sentence)
        if at < 0:
            continue  # not this body's sentence; nothing to mark
        end = at + len(sentence)
        body = body[:at] + _CITATION.sub(mark, body[at:end]) + body[end:]
    return body


def _italic(text: str, *, plain: bool) -> str:
    return text if plain else f"_{text}_"


def weak_line(weak: Sequence[WeakCitation], *, plain: bool = False) -> str:
    """One italic line naming the weakly supported citations; ``""`` when there are none."""
    if not weak:
        return ""
    marks = ", ".join(f"[{n}?]" for n in sorted({w.n for w in weak}))
    return _italic(f"Marked {marks}: the cited source barely supports that sentence.", plain=plain)


def listed_sources(sources: Sequence[Source]) -> tuple[bool, list[Source]]:
    """What every platform's Sources list shows: the cited sources in number order, and
    True; or, when the answer cites none, every source (consulted, not cited), and False."""
    cited = sorted((s for s in sources if s.cited), key=lambda s: s.n)
    return (True, cited) if cited else (False, sorted(sources, key=lambda s: s.n))


def sources_footer(sources: Sequence[Source]) -> str:
    """``Sources:`` and a ``[n] Title — url`` line per listed source (see
    :func:`listed_sources`); no sources gives ``""``."""
    if not sources:
        return ""
    cited, chosen = listed_sources(sources)
    heading = CITED_HEADING if cited else CONSULTED_HEADING
    return "\n".join([heading, *(f"[{s.n}] {s.title} — {s.url}" for s in chosen)])


def notice_lines(notices: Sequence[Notice], *, operator: bool, plain: bool = False) -> str:
    """One italic line per notice; with ``operator``, its hint follows the user line."""
    return "\n".join(
        _italic(f"{n.user} {n.operator}" if operator and n.operator else n.user, plain=plain)
        for n in notices
    )


def render_tail(reply: Reply, *, operator: bool, plain: bool = False) -> str:
    """What follows the body: the Sources list, then the notices, each after a blank line.

    ``plain``: no Markdown emphasis, for a terminal.
    """
    blocks = [
        sources_footer(reply.sources),
        weak_line(reply.weak_citations, plain=plain),
        notice_lines(reply.notices, operator=operator, plain=plain),
    ]
    return "".join(f"\n\n{block}" for block in blocks if block)


def render_reply(reply: Reply, *, operator: bool, plain: bool = False) -> str:
    """The whole reply as one text, weak citations marked ``[n?]``: Markdown, or with
    ``plain`` the text a terminal shows."""
    return mark_weak(reply.body, reply.weak_citations) + render_tail(
        reply, operator=operator, plain=plain
    )
