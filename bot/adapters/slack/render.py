"""Slack's own rendering of a :class:`~bot.contract.Reply`: mrkdwn, escaped, in parts.

The pipeline writes Markdown. Slack's messages speak *mrkdwn*, which differs: ``*bold*``,
``_italic_``, ``~strike~``, ``<url|label>`` links, no headings, and ``&``, ``<``, ``>`` are
control characters that must be sent as ``&amp;``, ``&lt;``, ``&gt;``. Escaping them
everywhere outside the link syntax this module writes itself is what makes ``<!channel>``,
``<!here>``, ``<!everyone>`` and ``<@U123>`` in model output or fetched text arrive as
text that notifies nobody (on top of :mod:`bot.pipeline.safety`, which has already made
them inert). Only ``http(s)`` links become live links; anything else stays plain text.

Native streaming (``chat.startStream``) takes standard Markdown instead, so
:func:`escape` alone is applied to what is streamed, and :func:`markdown_tail` gives the
Sources list in Markdown.

:func:`split_message` cuts a long rendering into messages of at most
:data:`MESSAGE_CHARS`, by the rules every platform shares (:mod:`bot.adapters.split`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.adapters.render import ATTRIBUTED_HEADING, listed_sources, marked_body
from bot.adapters.split import split_message as split_parts
from bot.contract import Notice, Reply, Source

# A section block's text holds at most 3,000 characters: one part per message.
MESSAGE_CHARS = 3000

_FENCE = re.compile(r"^\s*```")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^()\s]+(?:\([^()\s]*\)[^()\s]*)*)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_BOLD_MARK = "\x00"


def escape(text: str) -> str:
    """``&``, ``<``, ``>`` as Slack wants them in any text it parses."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """What a user typed, from the escaped text Slack sends in events."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _link(label: str, url: str) -> str:
    if not re.match(r"(?i)https?://", unescape(url)):
        return f"{label} ({url})"
    # ``|`` and ``>`` would end the link early; the URL is already escaped.
    return f"<{url.replace('|', '%7C')}|{label.replace('|', '¦')}>"


def _inline(text: str) -> str:
    """One line outside code blocks: escape, then Markdown emphasis and links to mrkdwn."""
    pieces = re.split(r"(`[^`\n]+`)", text)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2:  # an inline code span: escaped, not formatted
            out.append(escape(piece))
            continue
        done = _LINK.sub(lambda m: _link(m.group(1), m.group(2)), escape(piece))
        done = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", done)
        done = _ITALIC.sub(lambda m: f"_{m.group(1)}_", done)
        done = _STRIKE.sub(lambda m: f"~{m.group(1)}~", done)
        out.append(done.replace(_BOLD_MARK, "*"))
    return "".join(out)


def to_mrkdwn(markdown: str) -> str:
    """Markdown (as the LLM writes it) in Slack's mrkdwn, with ``&``, ``<``, ``>`` escaped."""
    lines = []
    in_code = False
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            # mrkdwn fences take no language tag: it would show as the first code line.
            lines.append("```")
            in_code = not in_code
            continue
        if in_code:
            lines.append(escape(line))
            continue
        heading = _HEADING.match(line)
        if heading:
            lines.append(f"*{_inline(heading.group(1)).strip('*')}*")
            continue
        bullet = _BULLET.match(line)
        if bullet and not line.lstrip().startswith("**"):
            lines.append(f"{bullet.group(1)}• {_inline(line[bullet.end() :])}")
            continue
        lines.append(_inline(line))
    return "\n".join(lines)


def _source_lines(sources: Sequence[Source], *, markdown: bool, attributed: bool) -> list[str]:
    cited, chosen = listed_sources(sources)
    heading = "Sources:" if cited else "Sources consulted (none cited):"
    if cited and attributed:
        heading = ATTRIBUTED_HEADING
    if markdown:
        rows = [f"[{s.n}] [{escape(s.title)}]({escape(s.url)})" for s in chosen]
        return [f"**{heading}**", *rows]
    return [f"*{heading}*", *(f"[{s.n}] {_link(escape(s.title), escape(s.url))}" for s in chosen)]


def _notice_lines(notices: Sequence[Notice]) -> list[str]:
    # Only the user line: a chat is no place for hosts, config keys or commands.
    return [f"_{escape(n.user)}_" for n in notices if n.user]


def render_mrkdwn(reply: Reply) -> str:
    """The whole reply in mrkdwn: body, numbered Sources with links, notices."""
    blocks = [to_mrkdwn(marked_body(reply))]
    attributed = bool(reply.attributions)
    if reply.sources:
        lines = _source_lines(reply.sources, markdown=False, attributed=attributed)
        blocks.append("\n".join(lines))
    if _notice_lines(reply.notices):
        blocks.append("\n".join(_notice_lines(reply.notices)))
    return "\n\n".join(block for block in blocks if block)


def markdown_tail(reply: Reply) -> str:
    """What follows the streamed body in a native stream: Sources and notices, Markdown."""
    blocks = []
    attributed = bool(reply.attributions)
    if reply.sources:
        lines = _source_lines(reply.sources, markdown=True, attributed=attributed)
        blocks.append("\n".join(lines))
    if _notice_lines(reply.notices):
        blocks.append("\n".join(_notice_lines(reply.notices)))
    return "".join(f"\n\n{block}" for block in blocks)


def split_message(text: str, limit: int = MESSAGE_CHARS) -> list[str]:
    """``text`` as Slack messages (see :mod:`bot.adapters.split`)."""
    return split_parts(text, limit)
