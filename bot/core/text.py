"""Text from outside made valid: bytes that were not UTF-8 become U+FFFD, NULs go.

A question can carry what no Unicode string should: Python decodes undecodable bytes of
argv (and of stdin, under a C locale) to lone surrogates ("surrogateescape"), which no
encoder, database or chat platform takes; a NUL is refused by some databases. Every
inbound message passes through :func:`valid_text` at the intake's door.
"""

from __future__ import annotations


def valid_text(text: str) -> str:
    """``text`` with each byte that was not UTF-8 as U+FFFD and NUL characters removed.

    Bytes that ``surrogateescape`` smuggled in come back as what they were and are
    replaced like any invalid UTF-8; any other lone surrogate is replaced too.
    """
    if text.isascii():
        return text.replace("\x00", "")
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace").replace("\x00", "")
