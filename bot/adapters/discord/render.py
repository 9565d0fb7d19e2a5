"""Discord's rendering of a reply, and the split of long answers into messages.

    <body>

    **Sources**
    [1] [Title](<https://...>) · Wikipedia

    *Hacker News was unavailable for this question.*

Every link is wrapped in ``<...>`` (or is a masked link with that target), so Discord
shows no preview for it, whichever route the text goes out by (a webhook edit cannot set
the "suppress embeds" flag). Only the notices' user lines appear: chats never see
operator hints.

:func:`split_message` cuts a text into messages of at most :data:`LIMIT` characters, by
the rules every platform shares (:mod:`bot.adapters.split`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bot.adapters.render import listed_sources, marked_body
from bot.adapters.split import code_spans
from bot.adapters.split import split_message as split_parts
from bot.contract import Notice, Reply, Source

LIMIT = 2000
CITED_HEADING = "**Sources**"
CONSULTED_HEADING = "**Sources consulted** (none cited directly)"
ATTRIBUTED_HEADING = "**Sources** (some citations added by the bot)"

_BARE_URL = re.compile(r"(?<![<(])\bhttps?://[^\s<>()\[\]]+(?:\([^\s<>()]*\)[^\s<>()\[\]]*)*")
_MASKED_TARGET = re.compile(r"\]\((https?://[^\s<>()]*(?:\([^\s<>()]*\)[^\s<>()]*)*)\)")
_TRAILING = ".,:;!?*_~'\""
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]])")


def progress_line(step: str) -> str:
    """What the reply shows while the turn is at ``step``."""
    return f"-# … {step}"


def escape(text: str) -> str:
    """Text shown as is: no Markdown, no masked-link syntax."""
    return _MARKDOWN.sub(r"\\\1", text)


def sources_block(sources: Sequence[Source], *, attributed: bool = False) -> str:
    if not sources:
        return ""
    cited, chosen = listed_sources(sources)
    heading = CONSULTED_HEADING if not cited else CITED_HEADING
    if cited and attributed:
        heading = ATTRIBUTED_HEADING
    lines = [f"[{s.n}] [{escape(s.title)}](<{s.url}>) · {s.source}" for s in chosen]
    return "\n".join([heading, *lines])


def notices_block(notices: Iterable[Notice]) -> str:
    return "\n".join(f"*{escape(n.user)}*" for n in notices if n.user)


def render_reply(reply: Reply) -> str:
    """The complete reply as Discord shows it (before splitting)."""
    blocks = [
        no_previews(marked_body(reply)),
        sources_block(reply.sources, attributed=bool(reply.attributions)),
        notices_block(reply.notices),
    ]
    return "\n\n".join(block for block in blocks if block.strip())


def no_previews(text: str) -> str:
    """Wrap bare links in ``<...>`` outside code, so Discord unfurls none of them."""
    pieces = []
    last = 0
    for start, end in code_spans(text):
        pieces.append(_wrap_links(text[last:start]))
        pieces.append(text[start:end])
        last = end
    pieces.append(_wrap_links(text[last:]))
    return "".join(pieces)


def _wrap_links(text: str) -> str:
    def wrap(match: re.Match[str]) -> str:
        url = match.group(0)
        kept = url.rstrip(_TRAILING)
        return f"<{kept}>{url[len(kept) :]}"

    def masked(part: str) -> str:
        return _BARE_URL.sub(wrap, _MASKED_TARGET.sub(r"](<\1>)", part))

    # Inline code keeps its text literally.
    parts = re.split(r"(`[^`\n]*`)", text)
    return "".join(part if n % 2 else masked(part) for n, part in enumerate(parts))


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """``text`` as Discord messages (see :mod:`bot.adapters.split`)."""
    return split_parts(text, limit)
