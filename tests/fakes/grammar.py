"""Structured output, as the fakes play it: a reply forced into the requested shape.

Ollama turns ``format`` (``"json"`` or a JSON schema) into a grammar that the model's
sampling must follow, as OpenAI-compatible servers (vLLM, OpenAI) do with a
``response_format`` of type ``json_schema`` or ``json_object``, so the reply is always
JSON of that shape, whatever the model meant to say: its prose, its numbered list, its
nothing end up inside the strings. The fakes cannot steer sampling, so they do the same
after the fact (:func:`conform`): a reply that already is JSON of the right shape passes
unchanged; anything else is poured into the shape, one non-empty line per array item (up
to ``maxItems``, padded with empty strings to ``minItems``), the whole text for a string.

The subset of JSON Schema covered is what a grammar-constrained reply of this project
needs: ``object`` (``properties``, ``required``), ``array`` (``items``, ``minItems``,
``maxItems``), ``string``, ``number``/``integer`` and ``boolean``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.fakes.scripted import split_tokens

__all__ = ["conform", "conformed", "matches"]


def conform(text: str, schema: object) -> str:
    """``text`` as the JSON a grammar built from ``schema`` lets through."""
    try:
        value = json.loads(text)
    except ValueError:
        value = _NOT_JSON
    if not isinstance(schema, dict):  # "json": any JSON value
        return text if value is not _NOT_JSON else json.dumps(text)
    if value is not _NOT_JSON and matches(value, schema):
        return text
    return json.dumps(_pour(text, schema))


_NOT_JSON = object()


def conformed(chunks: Iterator[str], schema: object) -> Iterator[str]:
    """A streamed reply as a grammar for ``schema`` lets it through (see :func:`conform`).

    The whole reply is needed to shape it; a responder that breaks midway breaks the
    stream after what it wrote, as without a schema.
    """
    parts: list[str] = []
    try:
        parts.extend(chunks)
    except Exception:
        yield from parts
        raise
    yield from split_tokens(conform("".join(parts), schema))


def matches(value: Any, schema: dict[str, Any]) -> bool:
    """Whether ``value`` has the shape ``schema`` asks for (the subset above)."""
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return False
        properties = schema.get("properties", {})
        if any(name not in value for name in schema.get("required", ())):
            return False
        return all(matches(value[k], properties[k]) for k in value if k in properties)
    if kind == "array":
        if not isinstance(value, list):
            return False
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return False
        items = schema.get("items", {})
        return all(matches(v, items) for v in value)
    if kind == "string":
        return isinstance(value, str)
    if kind in ("number", "integer"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return True


def _pour(text: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        names = schema.get("required") or list(properties)
        return {name: _pour(text, properties.get(name, {})) for name in names}
    if kind == "array":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        lines = lines[: schema.get("maxItems", len(lines))]
        lines += [""] * (schema.get("minItems", 0) - len(lines))
        items = schema.get("items", {})
        return [_pour(line, items) for line in lines]
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    return text.strip()
