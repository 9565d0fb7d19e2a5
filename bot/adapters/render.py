"""Plain-Markdown rendering of a :class:`~bot.contract.Reply`, as the terminal shows it.

    <body, a weakly supported citation shown as [3?], one the bot added shown as [2]>

    Sources (some citations added by the bot):
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

from bot.contract import Attribution, Notice, Reply, Source, WeakCitation

CITED_HEADING = "Sources:"
# The brief mark, on every platform, that some citations are the bot's, not the model's.
ATTRIBUTED_HEADING = "Sources (some citations added by the bot):"
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


def mark_attributed(body: str, attributions: Sequence[Attribution]) -> str:
    """``body`` with each attributed source cited as ``[n]`` at the end of its sentence."""
    for a in attributions:
        at = body.find(a.sentence)
        if at < 0:
            continue
        end = at + len(a.sentence)
        stop = end - 1 if a.sentence[-1] in ".!?" else end
        body = f"{body[:stop]} [{a.n}]{body[stop:]}"
    return body


def marked_body(reply: Reply) -> str:
    """The body as every platform shows it once the turn is over: weak citations marked
    ``[n?]`` and the bot's citations added (see :data:`ATTRIBUTED_HEADING`)."""
    return mark_attributed(mark_weak(reply.body, reply.weak_citations), reply.attributions)


def sources_heading(cited: bool, attributed: bool) -> str:
    """The Sources list's heading: cited (by the model, or some by the bot) or consulted."""
    if not cited:
        return CONSULTED_HEADING
    return ATTRIBUTED_HEADING if attributed else CITED_HEADING


def attributed_line(attributions: Sequence[Attribution], *, plain: bool = False) -> str:
    """One italic line naming the citations the bot added; ``""`` when there are none.

    A streamed body (the terminal's) cannot show them in place, so this line does.
    """
    if not attributions:
        return ""
    marks = ", ".join(f"[{a.n}] after “{_opening(a.sentence)}”" for a in attributions)
    return _italic(f"Added by the bot: {marks}.", plain=plain)


def _opening(sentence: str, words: int = 6) -> str:
    parts = sentence.split()
    return " ".join(parts[:words]) + ("…" if len(parts) > words else "")


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


def sources_footer(sources: Sequence[Source], *, attributed: bool = False) -> str:
    """``Sources:`` and a ``[n] Title — url`` line per listed source (see
    :func:`listed_sources` and :func:`sources_heading`); no sources gives ``""``."""
    if not sources:
        return ""
    cited, chosen = listed_sources(sources)
    heading = sources_heading(cited, attributed)
    return "\n".join([heading, *(f"[{s.n}] {s.title} — {s.url}" for s in chosen)])


def notice_lines(notices: Sequence[Notice], *, operator: bool, plain: bool = False) -> str:
    """One italic line per notice; with ``operator``, its hint follows the user line.

    A notice without a user line is shown only with ``operator``.
    """
    lines = []
    for n in notices:
        text = f"{n.user} {n.operator}".strip() if operator else n.user
        if text:
            lines.append(_italic(text, plain=plain))
    return "\n".join(lines)


def render_tail(reply: Reply, *, operator: bool, plain: bool = False) -> str:
    """What follows the body: the Sources list, then the notices, each after a blank line.

    ``plain``: no Markdown emphasis, for a terminal.
    """
    blocks = [
        sources_footer(reply.sources, attributed=bool(reply.attributions)),
        weak_line(reply.weak_citations, plain=plain),
        attributed_line(reply.attributions, plain=plain),
        notice_lines(reply.notices, operator=operator, plain=plain),
    ]
    return "".join(f"\n\n{block}" for block in blocks if block)


def render_reply(reply: Reply, *, operator: bool, plain: bool = False) -> str:
    """The whole reply as one text, its body marked (see :func:`marked_body`): Markdown, or
    with ``plain`` the text a terminal shows."""
    return marked_body(reply) + render_tail(reply, operator=operator, plain=plain)
