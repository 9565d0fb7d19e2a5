"""Plain-Markdown rendering of a :class:`~bot.contract.Reply`, as the terminal shows it.

    <body>

    Sources:
    [1] Title — https://...

    _Wikipedia was unavailable for this question._

The terminal is the operator's own window, so it shows each notice's operator hint (how
to fix it); a chat adapter passes ``operator=False`` and shows only the user line.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.contract import Notice, Reply, Source

CITED_HEADING = "Sources:"
CONSULTED_HEADING = "Sources consulted (none cited directly):"


def sources_footer(sources: Sequence[Source]) -> str:
    """``Sources:`` and a ``[n] Title — url`` line per cited source, in number order.

    When no source is cited, every source is listed under a heading that says so; no
    sources gives ``""``.
    """
    if not sources:
        return ""
    chosen = sorted((s for s in sources if s.cited), key=lambda s: s.n)
    heading = CITED_HEADING
    if not chosen:
        chosen, heading = sorted(sources, key=lambda s: s.n), CONSULTED_HEADING
    return "\n".join([heading, *(f"[{s.n}] {s.title} — {s.url}" for s in chosen)])


def notice_lines(notices: Sequence[Notice], *, operator: bool) -> str:
    """One italic line per notice; with ``operator``, its hint follows the user line."""
    return "\n".join(
        f"_{n.user} {n.operator}_" if operator and n.operator else f"_{n.user}_" for n in notices
    )


def render_tail(reply: Reply, *, operator: bool) -> str:
    """What follows the body: the Sources list, then the notices, each after a blank line."""
    blocks = [sources_footer(reply.sources), notice_lines(reply.notices, operator=operator)]
    return "".join(f"\n\n{block}" for block in blocks if block)


def render_reply(reply: Reply, *, operator: bool) -> str:
    """The whole reply as one Markdown text."""
    return reply.body + render_tail(reply, operator=operator)
