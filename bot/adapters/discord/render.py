"""Discord's rendering of a reply, and the split of long answers into messages.

    <body>

    **Sources**
    [1] [Title](<https://...>) · Wikipedia

    *Hacker News was unavailable for this question.*

Every link is wrapped in ``<...>`` (or is a masked link with that target), so Discord
shows no preview for it, whichever route the text goes out by (a webhook edit cannot set
the "suppress embeds" flag). Only the notices' user lines appear: chats never see
operator hints.

:func:`split_message` cuts a text into parts of at most :data:`LIMIT` characters: at a
paragraph break if one is far enough in, else a line break, else a sentence end, never
inside a link and not inside a fenced code block when the block fits in a message; a
block that does not fit is cut at a line, closed at the end of one part and re-opened
(with its language) at the start of the next.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bot.adapters.render import listed_sources
from bot.contract import Notice, Reply, Source

LIMIT = 2000
CITED_HEADING = "**Sources**"
CONSULTED_HEADING = "**Sources consulted** (none cited directly)"

_FENCE_LINE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})([^\n]*)$", re.MULTILINE)
_LINK = re.compile(
    r"\[[^\]\n]*\]\(<?[^)\s]*>?\)"  # [label](url) or [label](<url>)
    r"|<https?://[^>\s]+>"  # <url>
    r"|https?://[^\s<>]+"  # a bare url
)
_BARE_URL = re.compile(r"(?<![<(])\bhttps?://[^\s<>()\[\]]+(?:\([^\s<>()]*\)[^\s<>()\[\]]*)*")
_MASKED_TARGET = re.compile(r"\]\((https?://[^\s<>()]*(?:\([^\s<>()]*\)[^\s<>()]*)*)\)")
_TRAILING = ".,:;!?*_~'\""
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]])")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*[ \t]+")


def progress_line(step: str) -> str:
    """What the reply shows while the turn is at ``step``."""
    return f"-# … {step}"


def escape(text: str) -> str:
    """Text shown as is: no Markdown, no masked-link syntax."""
    return _MARKDOWN.sub(r"\\\1", text)


def sources_block(sources: Sequence[Source]) -> str:
    if not sources:
        return ""
    cited, chosen = listed_sources(sources)
    heading = CITED_HEADING if cited else CONSULTED_HEADING
    lines = [f"[{s.n}] [{escape(s.title)}](<{s.url}>) · {s.source}" for s in chosen]
    return "\n".join([heading, *lines])


def notices_block(notices: Iterable[Notice]) -> str:
    return "\n".join(f"*{escape(n.user)}*" for n in notices)


def render_reply(reply: Reply) -> str:
    """The complete reply as Discord shows it (before splitting)."""
    blocks = [no_previews(reply.body), sources_block(reply.sources), notices_block(reply.notices)]
    return "\n\n".join(block for block in blocks if block.strip())


def no_previews(text: str) -> str:
    """Wrap bare links in ``<...>`` outside code, so Discord unfurls none of them."""
    pieces = []
    last = 0
    for start, end in _code_spans(text):
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


# ----------------------------------------------------------------------------- splitting


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """``text`` as parts of at most ``limit`` characters (see the module docstring)."""
    if limit < 40:
        raise ValueError("a message limit below 40 characters leaves no room for fences")
    parts: list[str] = []
    reopen = ""
    rest = text
    while len(reopen) + len(rest) > limit:
        chunk = reopen + rest
        # Room for a closing fence, should the cut fall inside a block.
        room = limit - 1 - max((len(m.group(1)) for m in _FENCE_LINE.finditer(chunk)), default=3)
        cut = _cut(chunk, room)
        head, rest = chunk[:cut], chunk[cut:]
        opener = _open_fence(head)
        head = head.rstrip()
        if opener is not None:
            marker = re.match(r"\s*(`+|~+)", opener)
            head += "\n" + (marker.group(1) if marker else "```")
            reopen = opener + "\n"
            rest = rest.removeprefix("\n")
        else:
            reopen = ""
            rest = rest.lstrip("\n")
        if head.strip():
            parts.append(head)
    last = reopen + rest
    if last.strip():
        parts.append(last)
    return parts or [""]


def _cut(chunk: str, room: int) -> int:
    """Where to end the next part: an index into ``chunk``, at most ``room``."""
    code = _code_spans(chunk)
    links = [m.span() for m in _LINK.finditer(chunk)]

    def inside(i: int, spans: list[tuple[int, int]]) -> bool:
        return any(start < i < end for start, end in spans)

    def usable(i: int, *, in_code: bool = False) -> bool:
        return 0 < i <= room and not inside(i, links) and (in_code or not inside(i, code))

    # A part should not be a sliver: the preferred kinds of break count only past a third.
    floor = room // 3
    paragraphs = [m.end() for m in re.finditer(r"\n[ \t]*\n", chunk)]
    lines = [m.end() for m in re.finditer(r"\n", chunk)]
    sentences = [m.end() for m in _SENTENCE_END.finditer(chunk)]
    spaces = [m.end() for m in re.finditer(r"\s+", chunk)]
    for candidates, in_code, low in (
        (paragraphs, False, floor),
        (lines, False, floor),
        (sentences, False, floor),
        (lines, True, floor),
        (paragraphs + lines + sentences, False, 1),
        (lines, True, 1),
        (spaces, True, 1),
    ):
        good = [i for i in candidates if i >= low and usable(i, in_code=in_code)]
        if good:
            return max(good)
    # One unbroken run longer than a message: cut before a link rather than inside it.
    for start, end in links:
        if start < room < end and start > 0:
            return start
    return room


def _code_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each fenced block, from its opening line to its closing line."""
    spans: list[tuple[int, int]] = []
    opened: tuple[int, str] | None = None
    for match in _FENCE_LINE.finditer(text):
        fence = match.group(1)
        if opened is None:
            opened = (match.start(), fence)
        elif (
            fence[0] == opened[1][0] and len(fence) >= len(opened[1]) and not match.group(2).strip()
        ):
            spans.append((opened[0], match.end()))
            opened = None
    if opened is not None:
        spans.append((opened[0], len(text)))
    return spans


def _open_fence(text: str) -> str | None:
    """The opening line of a fenced block still open at the end of ``text``, if any."""
    opened: tuple[str, str] | None = None
    for match in _FENCE_LINE.finditer(text):
        fence = match.group(1)
        if opened is None:
            opened = (match.group(0).strip(), fence)
        elif (
            fence[0] == opened[1][0] and len(fence) >= len(opened[1]) and not match.group(2).strip()
        ):
            opened = None
    return None if opened is None else opened[0]
