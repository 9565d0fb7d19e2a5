"""The scripted model both wire fakes play: the same replies over Ollama's API and OpenAI's.

:func:`default_responder` plays a small, imperfect model so demos, benchmarks and
integration tests need no scripting; ``tests/fakes/ollama.py`` and
``tests/fakes/openai.py`` only change how its chunks go over the wire, so a test gets the
same answer from either provider. It recognises the pipeline's prompts by the ``*_MARKER``
phrases that open their system messages (``bot/pipeline/prompts.py``), and reads the
section labels of their human messages (``Question:``, ``Sources:``, ``New exchanges:``
...), so changing those prompts means checking this module:

* ``TOPIC_PROMPT``: a preamble line, then 1-3 numbered, quoted keywords derived from the
  question (content words; a follow-up with "it"/"its"/"they"... borrows the topic of the
  last ``User:`` line of the context), one with a trailing explanation, then a closing
  remark;
* ``SYNTHESIS_PROMPT``: 2-3 sentences that quote the titles of the first two numbered
  sources with their first sentences, cite ``[1]`` and ``[2]``, and add one invalid
  citation (``[9]`` for two sources: the highest number plus 7);
* ``SUMMARY_PROMPT``: the previous summary plus "The user asked about X and Y.";
* anything else: the last user message, echoed.

A :data:`Responder` takes the request's JSON body (both APIs send ``messages`` as a list
of ``{"role", "content"}``) and returns a ``str`` (split by :func:`split_tokens`) or the
chunks themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bot.pipeline.prompts import SUMMARY_MARKER, SYNTHESIS_MARKER, TOPIC_MARKER

__all__ = [
    "Responder",
    "default_responder",
    "derive_keywords",
    "prompt_tokens",
    "requested_schema",
    "requested_token_limit",
    "split_tokens",
]

Responder = Callable[[dict[str, Any]], "str | Iterable[str]"]

# ---------------------------------------------------------------------------------------
# Helpers shared by the servers and the default responder
# ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:\w{1,6}|[^\w\s])|\s+\Z")


def split_tokens(text: str) -> list[str]:
    """Split ``text`` into token-like chunks (words of up to six characters with their
    leading space, punctuation alone); ``"".join(split_tokens(t)) == t``."""
    return _TOKEN.findall(text)


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The ``prompt_eval_count`` the fake reports for a request: words and punctuation
    marks of every message (or of ``system`` and ``prompt``), at least 1."""
    texts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        texts.extend(str(m.get("content") or "") for m in messages if isinstance(m, dict))
    texts.extend(str(body.get(key) or "") for key in ("system", "prompt"))
    return max(1, sum(len(re.findall(r"\w+|[^\w\s]", t)) for t in texts))


def requested_schema(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema a request wants the reply to follow, whichever API asked: Ollama's
    ``format`` (a schema), or OpenAI's ``response_format`` of type ``json_schema``. None
    for free text (Ollama's ``format: "json"`` and OpenAI's ``json_object`` name no schema).

    A reply mode for structured output reads the schema here, so both fakes honour it alike.
    """
    ollama_format = body.get("format")
    if isinstance(ollama_format, dict):
        return ollama_format
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else None
    return None


def requested_token_limit(body: Mapping[str, Any]) -> int | None:
    """The most tokens a request lets the reply have, whichever API asked: Ollama's
    ``options.num_predict``, or OpenAI's ``max_completion_tokens`` (``max_tokens``)."""
    options = body.get("options")
    if isinstance(options, dict) and "num_predict" in options:
        limit = options["num_predict"]
    else:
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
    return limit if isinstance(limit, int) and limit > 0 else None


# ---------------------------------------------------------------------------------------
# The default responder: a small, imperfect model
# ---------------------------------------------------------------------------------------


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS = _wordset(
    """
    a an the and or but of in on at to for from by with about into over under as than then
    is are was were be been being am do does did done has have had can could should would
    will shall may might must what whats what's who whom whose which where when why how
    tell me explain describe summarise summarize give show find search look up please
    know more some any all this that these those it its it's they their them he she his
    her him i my we our you your us there here also just really very much many so if
    not no yes hey hi hello ok okay thanks thank work works happen happened mean means
    made make makes created create creates invented founded built wrote written
    """
)
_PRONOUNS = _wordset("it its it's they their them this that these those he she his her him")
_WORD = re.compile(r"[\w][\w'’+#.-]*")


def _content_words(text: str) -> list[str]:
    words = [w.strip(".'’-") for w in _WORD.findall(text)]
    return [w for w in words if w and w.lower() not in _STOPWORDS]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _last_user_line(context: str) -> str:
    lines = [ln[5:].strip() for ln in context.splitlines() if ln.startswith("User:")]
    return lines[-1] if lines else ""


def derive_keywords(question: str, context: str = "") -> list[str]:
    """The keywords the default responder gives for ``question`` (1-3, primary first).

    The primary is the question's first four content words, capitalised; a follow-up
    that uses a pronoun ("what about its successor?") is prefixed with the primary topic
    of the last ``User:`` line in ``context``. Then up to two single content words.
    """
    words = _content_words(question)
    lowered = {w.lower() for w in _WORD.findall(question)}
    previous = _last_user_line(context)
    topic = ""
    if previous and lowered & _PRONOUNS:
        topic = derive_keywords(previous)[0]
    primary = " ".join([topic, *words[:4]]).strip() or " ".join(question.split())
    keywords = [_capitalise(primary)]
    extras = [topic] if topic else []
    extras += [w for w in words if len(w) >= 4]
    for extra in extras:
        if len(keywords) == 3:
            break
        if extra and extra.lower() not in (k.lower() for k in keywords):
            keywords.append(extra)
    return keywords


def _section(text: str, label: str, *, until: str | None = None) -> str | None:
    """The text after a line ``label`` (up to the line ``until``), or None."""
    pattern = rf"^{re.escape(label)}[ \t]*\n?(.*?)"
    pattern += rf"\n\n{re.escape(until)}" if until else r"\Z"
    match = re.search(pattern, text, re.MULTILINE | re.DOTALL)
    if match is None and until is not None:
        return _section(text, label)
    return match.group(1).strip() if match else None


def _question(text: str) -> str:
    matches = list(re.finditer(r"^Question:[ \t]*(.*)", text, re.MULTILINE | re.DOTALL))
    return matches[-1].group(1).strip() if matches else text.strip()


def _topic_reply(user: str) -> str:
    context = _section(user, "Recent conversation (empty if this is the first question):")
    keywords = derive_keywords(_question(user), context or "")
    lines = ["Sure! Here are the search keywords for your question:", ""]
    for i, keyword in enumerate(keywords, 1):
        line = f'{i}. "{keyword}"'
        if i == 3:
            line += " - a related term that may help"
        lines.append(line)
    lines += ["", "Let me know if you need anything else!"]
    return "\n".join(lines)


def _parse_sources(user: str) -> list[tuple[int, str, str]]:
    section = _section(user, "Sources:", until="Source statistics:") or user
    sources: list[tuple[int, str, str]] = []
    for block in re.split(r"\n\s*\n", section):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        head = re.match(r"\[(\d+)\]\s+(.+)", lines[0]) if lines else None
        if head is None:
            continue
        title = re.sub(r"\s+\([^()]*\)$", "", head.group(2))
        body = lines[2:] if len(lines) > 1 and "://" in lines[1] else lines[1:]
        sources.append((int(head.group(1)), title, " ".join(body)))
    return sources


def _opening(text: str) -> str:
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip(), maxsplit=1)[0]
    if len(sentence) > 160:
        sentence = sentence[:160].rsplit(" ", 1)[0]
    return sentence.rstrip(" .!?")


def _synthesis_reply(user: str) -> str:
    sources = _parse_sources(user)
    question = _question(user)
    if not sources:
        return f"The sources I was given do not cover this question ({question}), sorry."
    invalid = max(n for n, _, _ in sources) + 7
    (n1, title1, text1), *rest = sources
    said1 = _opening(text1) or "it is directly relevant to the question"
    sentences = [f'According to "{title1}", {said1} [{n1}].']
    if rest:
        n2, title2, text2 = rest[0]
        said2 = _opening(text2) or "it gives more background"
        sentences.append(f'The article "{title2}" adds: {said2} [{n2}].')
    sentences.append(f"Some details may not be covered by these sources [{invalid}].")
    return " ".join(sentences)


def _summary_reply(user: str) -> str:
    previous = _section(user, "Previous summary (may be empty):", until="New exchanges:")
    transcript = _section(user, "New exchanges:", until="Updated summary:") or ""
    topics: list[str] = []
    for line in transcript.splitlines():
        if line.startswith("User:"):
            topic = derive_keywords(line[5:].strip())[0]
            if topic not in topics:
                topics.append(topic)
    parts = [previous[:300]] if previous else []
    if topics:
        listed = topics[0] if len(topics) == 1 else ", ".join(topics[:-1]) + " and " + topics[-1]
        parts.append(f"The user asked about {listed}.")
    return " ".join(parts) or "Nothing has been discussed yet."


def _prompt_parts(body: Mapping[str, Any]) -> tuple[str, str]:
    """(system text, last user text) of a chat or generate request."""
    messages = body.get("messages")
    if isinstance(messages, list):
        system = "\n".join(
            str(m.get("content") or "")
            for m in messages
            if isinstance(m, dict) and m.get("role") == "system"
        )
        users = [
            str(m.get("content") or "")
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        return system, users[-1] if users else ""
    return str(body.get("system") or ""), str(body.get("prompt") or "")


def default_responder(body: dict[str, Any]) -> list[str]:
    """Reply like a small, imperfect model to the pipeline's prompts (see module doc)."""
    system, user = _prompt_parts(body)
    haystack = f"{system}\n{user}"
    if TOPIC_MARKER in haystack:
        text = _topic_reply(user)
    elif SYNTHESIS_MARKER in haystack:
        text = _synthesis_reply(user)
    elif SUMMARY_MARKER in haystack:
        text = _summary_reply(user)
    else:
        text = user
    return split_tokens(text)
