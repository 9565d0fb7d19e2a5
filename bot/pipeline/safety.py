"""Make fetched text and model output harmless before any chat adapter sees it.

The threat: the answer is written by a model that read untrusted text (Wikipedia articles,
Hacker News comments). A prompt injected there, or a confused model, can put
``Note: @everyone check <https://evil.example/x>`` into the answer. Posted as is, that pings
a whole server and shows a clickable, unfurled link to a host nobody chose. Adapters should
also tell their platform not to notify (Discord's ``allowed_mentions``), but this module is
the platform-neutral layer of that defence: what it returns notifies nobody and links
nowhere the turn's sources do not, on Discord, Slack or in a terminal.

Rules:

* **Links** that are not among the turn's source URLs are *defanged*: still readable, never
  clickable: ``https://evil.example/x`` becomes ``hxxps://evil[.]example/x`` (the scheme's
  ``tt`` becomes ``xx``, the dots of the host are bracketed; a ``www.`` host or a URL nested
  inside the link is treated the same way). This covers bare URLs, Discord's
  ``<https://...>`` (the brackets go), Slack's ``<https://...|label>`` (becomes
  ``label (hxxps://...)``), Markdown ``[label](https://...)`` (the target is defanged) and
  scheme-less ``www.host/...``. A source URL is kept as it is, also with or without a
  trailing slash, followed by sentence punctuation, with balanced parentheses
  (``.../wiki/Transformer_(deep_learning_architecture)``) or as a Markdown target. Where a
  bare link ends follows GitHub's autolink rule: trailing ``.,:;!?*_~'"`` and unbalanced
  ``)`` / ``]`` are not part of it.
* **Mentions** that could notify get a zero-width space after the ``@``: ``@everyone``,
  ``@here`` and Slack's ``@channel`` in any case (``@\u200beveryone``); Discord's
  ``<@123>``, ``<@!123>``, ``<@&123>`` and Slack's ``<@U123>``, ``<@U123|name>``,
  ``<!channel>``, ``<!here>``, ``<!everyone>``, ``<!subteam^S123|@team>`` lose their angle
  brackets and become ``@\u200b123``, ``@\u200bname``, ``@\u200bchannel``,
  ``@\u200bteam``. E-mail addresses (``ops@here.com``), ordinary handles (``@heresy``,
  ``@alice``), channel links (``<#C1>``), citations (``[1, 2]``) and other Markdown are left
  alone.

:func:`neutralise` does a whole text; :class:`SafetyFilter` does a stream and gives the
same output for any chunking.

How the text is read, and why it can be streamed: it is cut into *units*, each rewritten
on its own with no look outside it: whitespace runs, angle constructs (``<...>`` of the
forms above, at most :data:`_ANGLE_MAX` characters, no newline) and *words* (the rest up
to whitespace or an angle construct). No link or mention contains whitespace (a Slack
label may, which is why angle constructs are units of their own), so a unit ends where the
text seen so far says it ends and the stream can emit every finished unit at once. A word
longer than :data:`_CAP` characters is cut into pieces, at a point no short token
(``https://``, ``www.x``, ``@everyone``) straddles, so the pieces cannot join into a live
token again (where no such point exists, a zero-width space goes in between); a link
running into such a cut is never treated as a source URL. Where a rewritten angle
construct meets a word (``http<https://x|s://y>``) a zero-width space keeps the two from
forming a token together.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Literal

from bot.contract import Neutralised

__all__ = ["SafetyFilter", "neutralise"]

_ZWSP = "\u200b"

# A word this long is rewritten in pieces, so a stream never holds more than about
# _CAP + _LOOK + _ANGLE_MAX characters back.
_CAP = 2000
# How far a cut may move back from _CAP to avoid splitting a short token (the longest,
# "@everyone", has 9 characters), and how much of the word must be seen to place it.
_LOOK = 16
# The longest angle construct (``<https://x|label>``) taken as one unit.
_ANGLE_MAX = 500

_WS_RE = re.compile(r"\s+")
_WS_SPLIT = re.compile(r"(\s+)")
_WORD_STOP = re.compile(r"[\s<]")
# The alternatives exclude each other by their first characters, so a match found in a
# stream's prefix is the match the whole text has.
_ANGLE = re.compile(
    r"<(?:"
    r"@[!&]?(?P<discord>\d+)"
    r"|@(?P<slack>[UW][A-Z0-9]+)"
    r"|!(?P<special>(?i:channel|here|everyone))"
    r"|!subteam\^(?P<team>[A-Z0-9]+)"
    r"|(?P<url>(?i:https?)://[^\s<>|]+)"
    r")(?:\|(?P<label>[^<>\n]*))?>"
)
# Every unfinished beginning of an _ANGLE match fits this (it may also fit text that never
# becomes one: that only holds the text back a little longer).
_ANGLE_PREFIX = re.compile(r"<(?:[@!][^<>\n]*|(?i:h)[^\s<>|]*(?:\|[^<>\n]*)?)?")
_WORD_TOKEN = re.compile(
    r"(?P<url>(?i:https?)://[^\s<>]*)"
    r"|(?P<www>(?<![A-Za-z0-9])(?i:www)\.[A-Za-z0-9-][^\s<>]*)"
    r"|(?P<at>@(?i:everyone|here|channel)(?!\w))"
)
# Inside a link being defanged: its scheme and host, and any link nested in it (a redirect
# target in the query would otherwise be autolinked once the outer link is inert).
_INNER_LINK = re.compile(
    r"(?P<h>(?i:h))(?P<tt>(?i:tt))(?P<tail>(?i:ps?)://)(?P<host>(?:(?!(?i:https?)://)[^/?#\s<>])*)"
    r"|(?P<www>(?<![A-Za-z0-9])(?i:www)\.(?:(?!(?i:https?)://)[^/?#\s<>])*)"
)
# Defanged text is plain text again, so "@here" in a path would notify: no e-mail excuse.
_MENTION = re.compile(r"@((?i:everyone|here|channel))(?!\w)")
# What a cut must not split: the shortest text each kind of token needs to be seen.
# Found with a lookahead, so overlapping ones ("www.https://") are all seen.
_SHORT_TOKEN = re.compile(r"(?=((?i:https?://|www\.[A-Za-z0-9-]|@(?:everyone|here|channel))))")
_EMAIL_DOMAIN = re.compile(r"\.[A-Za-z0-9]")
_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:/@")
_TRAILING = frozenset(".,:;!?*_~'\"`…")
_CLOSERS = {")": "(", "]": "["}

# "forced": a cut that could not avoid a token ("www.www.www..." has no free position).
_UnitKind = Literal["space", "angle", "word", "cut", "forced"]


def neutralise(text: str, allowed_urls: Collection[str]) -> tuple[str, Neutralised]:
    """Return ``text`` with foreign links defanged and mentions made inert, and the counts.

    ``allowed_urls`` are the turn's source URLs; links to them are kept (see the module
    docstring for the rules). Pure: the same input always gives the same output.
    """
    rewriter = _Rewriter(allowed_urls)
    out, _ = rewriter.run(text, final=True)
    return out, rewriter.counts


class SafetyFilter:
    """The streaming form of :func:`neutralise`, placed after ``AnswerFilter``.

    Only the unfinished last unit is held back (a partial word, an angle construct whose
    ``>`` has not come yet), at most about 2,500 characters; everything else is returned
    at once. Feeding the same text in any chunking gives exactly ``neutralise()`` of it.
    """

    def __init__(self, allowed_urls: Collection[str]) -> None:
        self._rewriter = _Rewriter(allowed_urls)
        self._pending = ""
        self._done = False

    def feed(self, chunk: str) -> str:
        """Take the next chunk; return the text that is safe to show now.

        Raises:
            RuntimeError: the stream was already flushed.
        """
        if self._done:
            raise RuntimeError("SafetyFilter.feed() after flush()")
        return self._drain(self._pending + chunk, final=False)

    def flush(self) -> str:
        """End the stream and return the held-back rest, made safe. Safe to call twice."""
        if self._done:
            return ""
        self._done = True
        return self._drain(self._pending, final=True)

    @property
    def neutralised(self) -> Neutralised:
        """What was made harmless in the text returned so far."""
        return self._rewriter.counts

    def _drain(self, text: str, *, final: bool) -> str:
        out, used = self._rewriter.run(text, final=final)
        self._pending = text[used:]
        return out


class _Rewriter:
    """Rewrites units and counts what it neutralised; shared by both public forms."""

    def __init__(self, allowed_urls: Collection[str]) -> None:
        self._allowed = frozenset(_normal(url) for url in allowed_urls)
        # No candidate longer than this can be a source URL, which bounds the search for
        # where a link ends (normalising drops at most one trailing slash).
        self._longest = max((len(url) + 1 for url in self._allowed), default=0)
        self.links = 0
        self.mentions = 0
        self._tail = ""  # the last character written
        self._last_kind: _UnitKind = "space"
        self._resume = 0  # how far into the held-back text the word scan got

    @property
    def counts(self) -> Neutralised:
        return Neutralised(links=self.links, mentions=self.mentions)

    def run(self, text: str, *, final: bool) -> tuple[str, int]:
        """Rewrite the finished units at the start of ``text``: ``(output, chars used)``."""
        out: list[str] = []
        i = 0
        while i < len(text):
            kind, end = _next_unit(text, i, final=final, resume=i + self._resume)
            self._resume = 0
            if kind is None:
                # Held back; the scan of a long word picks up here rather than at its start.
                self._resume = end - i
                break
            piece = text[i:end]
            if kind == "space":
                rendered = piece
            elif kind == "angle":
                rendered = self._angle(piece)
            else:
                rendered = self._word(piece, cut=kind != "word")
            # Each unit is safe alone, but a rewritten angle construct next to a word can
            # complete a token: "http" + "<https://x|s://y>" would read "https://y ...".
            # Every token is made of _TOKEN_CHARS, so one invisible space between them is
            # enough. A cut needs one only if it could not be placed outside every token.
            seam = "angle" in (kind, self._last_kind) or self._last_kind == "forced"
            if seam and rendered[:1] in _TOKEN_CHARS and self._tail in _TOKEN_CHARS:
                rendered = _ZWSP + rendered
            if rendered:
                self._tail = rendered[-1]
            self._last_kind = kind
            out.append(rendered)
            i = end
        return "".join(out), i

    def _word(self, word: str, *, cut: bool) -> str:
        out: list[str] = []
        pos = 0
        while (match := _WORD_TOKEN.search(word, pos)) is not None:
            out.append(word[pos : match.start()])
            token = match.group()
            if match.lastgroup == "at":
                out.append(token if _is_email(word, match) else self._mention(token))
                pos = match.end()
                continue
            end, allowed = self._link_extent(token, www=match.lastgroup == "www")
            link = token[:end]
            if allowed and not (cut and match.start() + end == len(word)):
                out.append(link)
            else:
                out.append(self._defang(link))
                self.links += 1
            pos = match.start() + end
        out.append(word[pos:])
        return "".join(out)

    def _angle(self, unit: str) -> str:
        match = _ANGLE.fullmatch(unit)
        assert match is not None  # _next_unit only calls it an angle unit if it matches
        label = match.group("label")
        url = match.group("url")
        if url is not None:
            if self._is_allowed(url, www=False):
                return unit if label is None else f"<{url}|{self._plain(label)}>"
            self.links += 1
            inert = self._defang(url)
            if label is None or not label.strip():
                return inert
            return f"{self._plain(label)} ({inert})"
        self.mentions += 1
        # A Slack user or group label is the readable name; Discord has no labels and a
        # Slack <!here|...> label says nothing the keyword does not.
        name = match.group("slack") or match.group("team")
        shown = label.strip().lstrip("@") if label and name else ""
        if shown:
            return "@" + _ZWSP + self._plain(shown)
        return "@" + _ZWSP + (name or match.group("discord") or match.group("special"))

    def _plain(self, text: str) -> str:
        """A label: plain text with no angle constructs, short enough to need no cuts."""
        # The split keeps the whitespace at odd indexes.
        parts = _WS_SPLIT.split(text)
        return "".join(
            part if n % 2 else self._word(part, cut=False) for n, part in enumerate(parts)
        )

    def _mention(self, token: str) -> str:
        self.mentions += 1
        return "@" + _ZWSP + token[1:]

    def _defang(self, link: str) -> str:
        def inert(match: re.Match[str]) -> str:
            www = match.group("www")
            if www is not None:
                return www.replace(".", "[.]")
            tt = "".join("X" if c == "T" else "x" for c in match.group("tt"))
            return (
                match.group("h")
                + tt
                + match.group("tail")
                + match.group("host").replace(".", "[.]")
            )

        text, count = _MENTION.subn("@" + _ZWSP + r"\1", _INNER_LINK.sub(inert, link))
        self.mentions += count
        return text

    def _link_extent(self, token: str, *, www: bool) -> tuple[int, bool]:
        """Where the link in ``token`` ends, and whether it is a source URL.

        A source URL wins over the autolink rule, so a source whose URL really ends in
        ``)`` or ``.`` is kept whole.
        """
        end = _autolink_end(token)
        for candidate in range(min(len(token), self._longest), end - 1, -1):
            if self._is_allowed(token[:candidate], www=www):
                return candidate, True
        return end, False

    def _is_allowed(self, link: str, *, www: bool) -> bool:
        if not www:
            return _normal(link) in self._allowed
        return any(_normal(scheme + link) in self._allowed for scheme in ("https://", "http://"))


def _normal(url: str) -> str:
    return url[:-1] if url.endswith("/") else url


def _is_email(word: str, match: re.Match[str]) -> bool:
    start = match.start()
    return (
        start > 0
        and word[start - 1] in _EMAIL_LOCAL
        and _EMAIL_DOMAIN.match(word, match.end()) is not None
    )


def _autolink_end(link: str) -> int:
    """GitHub's rule: trailing punctuation and unbalanced closing brackets are not the link."""
    balance = {
        closer: link.count(closer) - link.count(opener) for closer, opener in _CLOSERS.items()
    }
    end = len(link)
    while end:
        ch = link[end - 1]
        if ch in _TRAILING:
            end -= 1
        elif ch in balance and balance[ch] > 0:
            balance[ch] -= 1
            end -= 1
        else:
            break
    return end


def _next_unit(text: str, i: int, *, final: bool, resume: int = 0) -> tuple[_UnitKind | None, int]:
    """The unit starting at ``text[i]``: ``(kind, end)``, or ``(None, resume)`` if more text
    could change it (``resume``: where a later call may continue the word scan).

    Whenever this returns a unit for a prefix of a stream, it returns the same one for the
    whole stream: that is what makes :class:`SafetyFilter` independent of chunking.
    """
    space = _WS_RE.match(text, i)
    if space is not None:
        # A run of whitespace is copied as is, so emitting part of it changes nothing.
        return "space", space.end()
    if text[i] == "<":
        angle = _angle_end(text, i, final=final)
        if angle is None:
            return None, i
        if angle:
            return "angle", angle
    return _word_end(text, i, final=final, resume=resume)


def _angle_end(text: str, i: int, *, final: bool) -> int | None:
    """End of the angle construct at ``text[i]``, 0 if there is none, None if undecided."""
    match = _ANGLE.match(text, i)
    if match is not None:
        return match.end() if match.end() - i <= _ANGLE_MAX else 0
    if final or len(text) - i >= _ANGLE_MAX:
        return 0
    return None if _ANGLE_PREFIX.fullmatch(text, i) else 0


def _word_end(text: str, i: int, *, final: bool, resume: int) -> tuple[_UnitKind | None, int]:
    limit = i + _CAP + _LOOK
    # A "<" found not to open an angle construct stays so, so a resumed scan skips it.
    j = max(i + 1, resume)
    while True:
        stop = _WORD_STOP.search(text, j, limit)
        if stop is None:
            if len(text) >= limit:
                return _cut_point(text, i, limit)
            if not final:
                return None, len(text)
            end = len(text)
            break
        k = stop.start()
        if text[k] != "<":
            end = k
            break
        angle = _angle_end(text, k, final=final)
        if angle is None:
            return None, k
        if angle:
            end = k
            break
        j = k + 1
    if end - i > _CAP:
        return _cut_point(text, i, end)
    return "word", end


def _cut_point(text: str, start: int, stop: int) -> tuple[_UnitKind, int]:
    """Where a long word is cut: near ``start + _CAP``, outside any short token if it can."""
    low, high = start + _CAP - _LOOK, start + _CAP
    inside: set[int] = set()
    for token in _SHORT_TOKEN.finditer(text, low - _LOOK, stop):
        inside.update(range(token.start(1) + 1, token.end(1)))
    free = next((p for p in range(high, low - 1, -1) if p not in inside), None)
    return ("forced", high) if free is None else ("cut", free)
