"""Plain-Markdown rendering of a :class:`~bot.contract.Reply`, as the terminal shows it.

    <body, a weakly supported citation shown as [3?]>

    Sources:
    [1] Title — https://...

    _Wikipedia was unavailable for this question._

The terminal is the operator's own window, so it shows each notice's operator hint (how
to fix it); a chat adapter passes ``operator=False`` and shows only the user line.
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


def weak_line(weak: Sequence[WeakCitation]) -> str:
    """One italic line naming the weakly supported citations; ``""`` when there are none."""
    if not weak:
        return ""
    marks = ", ".join(f"[{n}?]" for n in sorted({w.n for w in weak}))
    return f"_Marked {marks}: the cited source barely supports that sentence._"


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


def notice_lines(notices: Sequence[Notice], *, operator: bool) -> str:
    """One italic line per notice; with ``operator``, its hint follows the user line."""
    return "\n".join(
        f"_{n.user} {n.operator}_" if operator and n.operator else f"_{n.user}_" for n in notices
    )


def render_tail(reply: Reply, *, operator: bool) -> str:
    """What follows the body: the Sources list, then the notices, each after a blank line."""
    blocks = [
        sources_footer(reply.sources),
        weak_line(reply.weak_citations),
        notice_lines(reply.notices, operator=operator),
    ]
    return "".join(f"\n\n{block}" for block in blocks if block)


def render_reply(reply: Reply, *, operator: bool) -> str:
    """The whole reply as one Markdown text, weak citations marked ``[n?]``."""
    return mark_weak(reply.body, reply.weak_citations) + render_tail(reply, operator=operator)
