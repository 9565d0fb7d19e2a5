"""Long answers cut into messages, with the same rules on every platform.

:func:`split_message` cuts a text into parts of at most ``limit`` characters (a platform's
message size): at a paragraph break if one is far enough in, else a line break, else a
sentence end, never inside a link and not inside a fenced code block when the block fits
in a message; a block that does not fit is cut at a line, closed at the end of one part
and re-opened (with its opening line, language included) at the start of the next; a
block that must be cut starts a part of its own.
Renderings that drop fence languages (Slack's mrkdwn) get them re-opened bare.
"""

from __future__ import annotations

import re

_FENCE_LINE = re.compile(r"^[ ]{0,3}(`{3,}|~{3,})([^\n]*)$", re.MULTILINE)
_LINK = re.compile(
    r"\[[^\]\n]*\]\(<?[^)\s]*>?\)"  # [label](url) or [label](<url>)
    r"|<https?://[^>\n]+>"  # <url>, or Slack's <url|label>
    r"|https?://[^\s<>]+"  # a bare url
)
_TRAILING_LINES = re.compile(r"\n\s*$")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*[ \t]+")


def split_message(text: str, limit: int) -> list[str]:
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
        # Blank lines at a cut would show as empty space; a line's own spaces stay.
        head = _TRAILING_LINES.sub("", head)
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
    code = code_spans(chunk)
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
    # A code block that must be cut anyway starts a part of its own, short as the part
    # before it may be: code reads better from its first line.
    blocks = [start for start, _ in code]
    for candidates, in_code, low in (
        (paragraphs, False, floor),
        (lines, False, floor),
        (sentences, False, floor),
        (blocks, False, 1),
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


def code_spans(text: str) -> list[tuple[int, int]]:
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
