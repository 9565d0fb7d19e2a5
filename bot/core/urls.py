"""URLs as operators may see them: without the password they carry."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` with its password (in the authority or as a ``password=`` query parameter)
    replaced by ``***``; anything else, a file path included, as it is."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}")
    if "password=" in parts.query.lower():
        query = "&".join(
            "password=***" if item.lower().startswith("password=") else item
            for item in parts.query.split("&")
        )
        parts = parts._replace(query=query)
    return urlunsplit(parts)
