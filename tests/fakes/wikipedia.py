"""A fake Wikipedia: the MediaWiki Action API at ``/w/api.php``, with the real API's habits.

Point a client at ``fake.url + "/w/api.php"``. Served: ``action=query`` with ``titles=`` or
``generator=search`` (``gsrsearch``, ``gsrlimit``, ``gsroffset``), ``list=search``
(``srsearch``, ``srlimit``, ``sroffset``) and the ``extracts``, ``info`` and ``pageprops``
props. Habits a client must survive, as the real API has them:

* ``format=json`` must be asked for (otherwise an HTML page comes back); ``query.pages`` is a
  dict keyed by page id, or a list with ``formatversion=2``; booleans are ``""`` (v1) or
  ``true`` (v2) and are absent when false;
* boolean parameters are true when present, whatever their value (``exintro=0`` is intro);
* a missing page has ``missing`` (and id ``-1``, ``-2``... in v1), yet ``inprop=url`` still
  gives it URLs; redirects are followed only with ``redirects=1``; titles are normalised
  (first letter upper-cased, ``_`` to space) and are case-sensitive after the first letter;
* ``generator=search`` returns pages in page-id order with the search rank in ``index``;
  disambiguation pages are found by search like any page (``ppprop=disambiguation`` marks them);
* TextExtracts fills ``exlimit`` extracts (default and maximum 20) and only one without
  ``exintro``, then says ``excontinue``;
* errors are HTTP 200 with ``{"error": {"code", "info"}}`` and a ``MediaWiki-API-Error`` header.

Test switches beyond the base class's (latency, faults, in-flight counts): ``api_error``
(answer every request with that error) and ``chunked`` (stream answers without
``Content-Length``).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from tests.fakes.base import FakeServer

API_PATH = "/w/api.php"
_EXTRACTS_MAX = 20
_SEARCH_MAX = 500
_REDIRECT_IDS_FROM = 90_000_000
_URL_SAFE = "()/:,!$*;@~'"
_INVALID_TITLE = re.compile(r"[#<>\[\]{}|]")
_KNOWN_PROPS = frozenset({"extracts", "info", "pageprops"})


@dataclass(frozen=True, slots=True)
class WikiPage:
    """One article. ``text`` is the lead section (what ``exintro`` returns), ``body`` the rest."""

    title: str
    pageid: int
    text: str
    disambiguation: bool = False
    body: str = ""
    wikibase_item: str = ""
    touched: str = "2025-01-15T09:30:00Z"


class _ApiError(Exception):
    def __init__(self, code: str, info: str) -> None:
        super().__init__(f"{code}: {info}")
        self.code = code
        self.info = info


@dataclass(slots=True)
class _Entry:
    """One member of the page set being answered."""

    title: str
    page: WikiPage | None = None  # None: missing (or invalid)
    index: int | None = None
    is_redirect: bool = False
    invalid: str | None = None


class FakeWikipedia(FakeServer):
    """The Action API over ``pages`` (default :data:`DEFAULT_PAGES`) and ``redirects``.

    ``redirects`` maps a redirect's title to its target's; it defaults to
    :data:`DEFAULT_REDIRECTS` with the default pages and to none with custom ones.
    ``language`` only shapes the URLs (``https://{language}.wikipedia.org/wiki/...``).
    """

    def __init__(
        self,
        pages: Sequence[WikiPage] | None = None,
        redirects: Mapping[str, str] | None = None,
        *,
        language: str = "en",
    ) -> None:
        super().__init__()
        self.pages: tuple[WikiPage, ...] = tuple(DEFAULT_PAGES if pages is None else pages)
        if redirects is None:
            redirects = DEFAULT_REDIRECTS if pages is None else {}
        self.redirects: dict[str, str] = dict(redirects)
        self.language = language
        self.api_error: tuple[str, str] | None = None
        self.chunked = False
        self._by_title = {page.title: page for page in self.pages}

    def routes(self, app: web.Application) -> None:
        # Outermost, so the base class's latency counts as time in flight.
        app.router.add_route("GET", API_PATH, self._api)
        app.router.add_route("POST", API_PATH, self._api)

    def search(self, text: str) -> list[WikiPage]:
        """Pages matching every word of ``text``, best first (title words weigh most)."""
        words = _words(text)
        if not words:
            return []
        scored = []
        for page in self.pages:
            title_words = _words(page.title)
            all_words = title_words + _words(f"{page.text} {page.body}")
            if all(word in all_words for word in words):
                score = sum(10 * title_words.count(w) + all_words.count(w) for w in words)
                scored.append((-score, page.pageid, page))
        return [page for *_, page in sorted(scored, key=lambda item: item[:2])]

    def url_of(self, title: str) -> str:
        return f"https://{self.language}.wikipedia.org/wiki/" + quote(
            title.replace(" ", "_"), safe=_URL_SAFE
        )

    async def _api(self, request: web.Request) -> web.StreamResponse:
        params: MultiDict[str] = MultiDict(request.query)
        if request.method == "POST":
            form = await request.post()
            params.extend((k, v) for k, v in form.items() if isinstance(v, str))
        v2 = params.get("formatversion") in ("2", "latest")
        html_format = params.get("format") != "json"
        try:
            payload = self._answer(MultiDictProxy(params), v2)
        except _ApiError as exc:
            error = {"code": exc.code, "info": exc.info}
            docref = "See https://en.wikipedia.org/w/api.php for API usage."
            error.update({"docref": docref} if v2 else {"*": docref})
            return await self._reply(
                request,
                {"error": error, "servedby": "mw-api-fake"},
                html_format,
                headers={"MediaWiki-API-Error": exc.code},
            )
        return await self._reply(request, payload, html_format)

    def _answer(self, params: MultiDictProxy[str], v2: bool) -> dict[str, Any]:
        if self.api_error is not None:
            raise _ApiError(*self.api_error)
        action = params.get("action", "help")
        if action != "query":
            raise _ApiError("badvalue", f'Unrecognized value for parameter "action": {action}.')
        result: dict[str, Any] = {}
        warnings: dict[str, str] = {}
        query: dict[str, Any] = {}
        entries = self._page_set(params, query, result)
        if "search" in _multi(params.get("list")):
            self._list_search(params, query, result)
        props = _multi(params.get("prop"))
        if props - _KNOWN_PROPS:
            unknown = ", ".join(sorted(props - _KNOWN_PROPS))
            warnings["main"] = f'Unrecognized value for parameter "prop": {unknown}.'
        if entries:
            query["pages"] = self._pages(entries, params, v2, warnings, result)
        if "excontinue" not in result.get("continue", {}):
            result["batchcomplete"] = True if v2 else ""
        if warnings:
            key = "warnings" if v2 else "*"
            result["warnings"] = {module: {key: text} for module, text in warnings.items()}
        if query:
            result["query"] = query
        return result

    def _page_set(
        self, params: MultiDictProxy[str], query: dict[str, Any], result: dict[str, Any]
    ) -> list[_Entry]:
        generator = params.get("generator")
        if generator is not None and "titles" in params:
            raise _ApiError(
                "invalidparammix",
                'The parameters "titles" and "generator" can not be used together.',
            )
        if generator is not None:
            return self._generator(generator, params, result)
        if "titles" in params:
            return self._titles(params["titles"], "redirects" in params, query)
        return []

    def _titles(self, raw: str, follow: bool, query: dict[str, Any]) -> list[_Entry]:
        normalized: list[dict[str, Any]] = []
        redirects: list[dict[str, str]] = []
        entries: dict[str, _Entry] = {}
        for given in raw.split("|"):
            title = _normalize(given)
            if title is None:
                reason = "The requested page title is empty or contains illegal characters."
                entries[given] = _Entry(given, invalid=reason)
                continue
            if title != given:
                normalized.append({"fromencoded": False, "from": given, "to": title})
            target = self.redirects.get(title)
            if follow and target is not None:
                redirects.append({"from": title, "to": target})
                title = target
            entries.setdefault(title, self._entry(title))
        if normalized:
            query["normalized"] = normalized
        if redirects:
            query["redirects"] = redirects
        return list(entries.values())

    def _entry(self, title: str) -> _Entry:
        page = self._by_title.get(title)
        if page is not None:
            return _Entry(title, page)
        if title in self.redirects:
            pageid = _REDIRECT_IDS_FROM + sorted(self.redirects).index(title)
            return _Entry(title, WikiPage(title, pageid, ""), is_redirect=True)
        return _Entry(title)

    def _generator(
        self, generator: str, params: MultiDictProxy[str], result: dict[str, Any]
    ) -> list[_Entry]:
        if generator != "search":
            raise _ApiError(
                "badvalue", f'Unrecognized value for parameter "generator": {generator}.'
            )
        found, offset, more = self._search_window(params, "gsr")
        if more is not None:
            result["continue"] = {"gsroffset": more, "continue": "gsroffset||"}
        return [_Entry(p.title, p, index=offset + i + 1) for i, p in enumerate(found)]

    def _list_search(
        self, params: MultiDictProxy[str], query: dict[str, Any], result: dict[str, Any]
    ) -> None:
        found, _, more = self._search_window(params, "sr")
        words = _words(params["srsearch"])
        query["searchinfo"] = {"totalhits": len(self.search(params["srsearch"]))}
        query["search"] = [
            {
                "ns": 0,
                "title": page.title,
                "pageid": page.pageid,
                "size": len(page.text) + len(page.body),
                "wordcount": len(f"{page.text} {page.body}".split()),
                "snippet": _snippet(page.text, words),
                "timestamp": page.touched,
            }
            for page in found
        ]
        if more is not None:
            result.setdefault("continue", {}).update({"sroffset": more, "continue": "-||"})

    def _search_window(
        self, params: MultiDictProxy[str], prefix: str
    ) -> tuple[list[WikiPage], int, int | None]:
        text = params.get(f"{prefix}search", "")
        if not text.strip():
            raise _ApiError("missingparam", f'The "{prefix}search" parameter must be set.')
        limit = _limit(params, f"{prefix}limit", default=10, maximum=_SEARCH_MAX)
        offset = _integer(params, f"{prefix}offset", 0)
        hits = self.search(text)
        more = offset + limit if offset + limit < len(hits) else None
        return hits[offset : offset + limit], offset, more

    def _pages(
        self,
        entries: list[_Entry],
        params: MultiDictProxy[str],
        v2: bool,
        warnings: dict[str, str],
        result: dict[str, Any],
    ) -> list[dict[str, Any]] | dict[str, dict[str, Any]]:
        props = _multi(params.get("prop"))
        absent = [e for e in entries if e.page is None]
        present = sorted((e for e in entries if e.page is not None), key=_pageid)
        rendered = [self._render(e, props, params, v2) for e in [*absent, *present]]
        if "extracts" in props:
            self._add_extracts(present, rendered[len(absent) :], params, warnings, result)
        if v2:
            return rendered
        keys = [str(-n) for n in range(1, len(absent) + 1)] + [str(_pageid(e)) for e in present]
        return dict(zip(keys, rendered, strict=True))

    def _render(
        self, entry: _Entry, props: frozenset[str], params: MultiDictProxy[str], v2: bool
    ) -> dict[str, Any]:
        flag: bool | str = True if v2 else ""
        if entry.invalid is not None:
            return {"title": entry.title, "invalidreason": entry.invalid, "invalid": flag}
        out: dict[str, Any] = {} if entry.page is None else {"pageid": entry.page.pageid}
        out.update({"ns": 0, "title": entry.title})
        if entry.page is None:
            out["missing"] = flag
        if entry.index is not None:
            out["index"] = entry.index
        if "info" in props:
            out.update(self._info(entry, params, flag))
        if "pageprops" in props and entry.page is not None:
            pageprops = _pageprops(entry.page, params)
            if pageprops:
                out["pageprops"] = pageprops
        return out

    def _info(self, entry: _Entry, params: MultiDictProxy[str], flag: bool | str) -> dict[str, Any]:
        info: dict[str, Any] = {
            "contentmodel": "wikitext",
            "pagelanguage": self.language,
            "pagelanguagehtmlcode": self.language,
            "pagelanguagedir": "ltr",
        }
        page = entry.page
        if page is not None:
            info.update(
                touched=page.touched,
                lastrevid=page.pageid * 7 + 3,
                length=len(page.text) + len(page.body),
            )
        if entry.is_redirect:
            info["redirect"] = flag
        if "url" in _multi(params.get("inprop")):
            edit_title = quote(entry.title.replace(" ", "_"), safe=_URL_SAFE)
            info.update(
                fullurl=self.url_of(entry.title),
                editurl=f"https://{self.language}.wikipedia.org/w/index.php"
                f"?title={edit_title}&action=edit",
                canonicalurl=self.url_of(entry.title),
            )
        return info

    def _add_extracts(
        self,
        entries: list[_Entry],
        rendered: list[dict[str, Any]],
        params: MultiDictProxy[str],
        warnings: dict[str, str],
        result: dict[str, Any],
    ) -> None:
        intro = "exintro" in params
        limit = _limit(params, "exlimit", default=_EXTRACTS_MAX, maximum=_EXTRACTS_MAX)
        if not intro and limit > 1:
            if "exlimit" in params:
                warnings["extracts"] = (
                    "exlimit was too large for a whole article extracts request, lowered to 1."
                )
            limit = 1
        for entry, out in zip(entries[:limit], rendered[:limit], strict=True):
            out["extract"] = _extract(entry, intro=intro, plain="explaintext" in params)
        if len(entries) > limit:
            continuation = result.setdefault("continue", {})
            continuation["excontinue"] = limit
            continuation.setdefault("continue", "||")

    async def _reply(
        self,
        request: web.Request,
        payload: dict[str, Any],
        html_format: bool,
        headers: Mapping[str, str] | None = None,
    ) -> web.StreamResponse:
        text = json.dumps(payload, ensure_ascii=False, indent=4 if html_format else None)
        if html_format:
            # What the real API does without format=json: its "jsonfm" help-and-result page.
            page = f"<!DOCTYPE html><html><body><pre>{html.escape(text)}</pre></body></html>"
            return web.Response(text=page, content_type="text/html", headers=headers)
        data = text.encode()
        if not self.chunked:
            return web.Response(
                body=data, content_type="application/json", charset="utf-8", headers=headers
            )
        response = web.StreamResponse(headers=headers)
        response.content_type = "application/json"
        response.charset = "utf-8"
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for start in range(0, len(data), 4096):
                await response.write(data[start : start + 4096])
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client stopped reading (a body cap); nothing left to do
        return response


def _pageid(entry: _Entry) -> int:
    return entry.page.pageid if entry.page is not None else 0


def _multi(value: str | None) -> frozenset[str]:
    return frozenset(v for v in (value or "").split("|") if v)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _normalize(title: str) -> str | None:
    """MediaWiki's title normalisation: ``_`` to space, first letter upper-cased, rest kept."""
    cleaned = " ".join(title.replace("_", " ").split())
    if not cleaned or _INVALID_TITLE.search(cleaned):
        return None
    return cleaned[0].upper() + cleaned[1:]


def _integer(params: MultiDictProxy[str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise _ApiError(
            "badinteger", f'Invalid value "{raw}" for integer parameter "{name}".'
        ) from None


def _limit(params: MultiDictProxy[str], name: str, *, default: int, maximum: int) -> int:
    if params.get(name) == "max":
        return maximum
    value = _integer(params, name, default)
    if value < 1:
        raise _ApiError("badinteger", f'Invalid value "{value}" for limit parameter "{name}".')
    return min(value, maximum)


def _pageprops(page: WikiPage, params: MultiDictProxy[str]) -> dict[str, str]:
    props: dict[str, str] = {}
    if page.disambiguation:
        props["disambiguation"] = ""
    if page.wikibase_item:
        props["wikibase_item"] = page.wikibase_item
    wanted = _multi(params.get("ppprop"))
    return {k: v for k, v in props.items() if k in wanted} if wanted else props


def _extract(entry: _Entry, *, intro: bool, plain: bool) -> str:
    page = entry.page
    if page is None or entry.is_redirect:
        return ""
    text = page.text if intro or not page.body else f"{page.text}\n\n{page.body}"
    if plain:
        return text
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _snippet(text: str, words: Sequence[str], width: int = 160) -> str:
    """A window of ``text`` around the first match, HTML-escaped, matches highlighted."""
    lowered = text.casefold()
    starts = [lowered.find(w) for w in words if lowered.find(w) >= 0]
    begin = max(min(starts, default=0) - 40, 0)
    escaped = html.escape(text[begin : begin + width])
    if not words:
        return escaped
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, words)) + r")", re.IGNORECASE)
    return pattern.sub(r'<span class="searchmatch">\1</span>', escaped)


DEFAULT_PAGES: tuple[WikiPage, ...] = (
    WikiPage(
        title="Transformer (deep learning architecture)",
        pageid=61603971,
        wikibase_item="Q85810444",
        text=(
            "The transformer is a deep learning architecture that processes a whole sequence "
            "of tokens in parallel with multi-head self-attention instead of recurrence. Each "
            "token is first mapped to an embedding vector, and every layer lets each token "
            "gather information from all the other tokens in its context window, weighted by "
            "learned attention scores. Because it has no recurrent connections, a transformer "
            "trains far faster on GPUs than earlier sequence models and scales to much larger "
            "datasets. The design was introduced by Google researchers in the 2017 paper "
            '"Attention Is All You Need" for machine translation, and it now underlies large '
            "language models, vision transformers and speech recognition systems."
        ),
        body=(
            "== Architecture ==\n"
            "The original model is an encoder-decoder: a stack of encoder layers reads the "
            "source sentence and a stack of decoder layers writes the translation. Positional "
            "encodings are added to the embeddings because attention alone ignores word order."
        ),
    ),
    WikiPage(
        title="Transformer",
        pageid=30001,
        disambiguation=True,
        wikibase_item="Q11658",
        text=(
            "Transformer may refer to:\n\n"
            "Transformer, an electrical device that transfers energy between circuits by "
            "electromagnetic induction. Transformer (deep learning architecture), a neural "
            "network design based on attention. Transformers, a franchise of toys, cartoons "
            "and films about robots that change shape. Transformer (album), a 1972 rock album."
        ),
    ),
    WikiPage(
        title="Attention (machine learning)",
        pageid=62234556,
        wikibase_item="Q87249815",
        text=(
            "In machine learning, attention is a technique that lets a model decide how much "
            "each part of its input should contribute to each part of its output. For every "
            "query vector the model scores its similarity to a set of key vectors, turns the "
            "scores into weights with a softmax, and returns the weighted sum of the matching "
            "value vectors. Attention was first added to recurrent encoder-decoder networks "
            "for neural machine translation in 2014, so that the decoder could look back at "
            "every source word instead of a single fixed-length summary. Scaled dot-product "
            "attention and its multi-head form later became the core operation of the "
            "transformer."
        ),
    ),
    WikiPage(
        title="BERT (language model)",
        pageid=62026514,
        wikibase_item="Q61726893",
        text=(
            "Bidirectional Encoder Representations from Transformers (BERT) is a language "
            "model that Google released in October 2018. It keeps only the encoder stack of "
            "the transformer and is pre-trained on unlabelled text with two tasks: guessing "
            "words that were masked out of a sentence, and telling whether one sentence really "
            "follows another. Because every token sees context on both its left and its "
            "right, BERT's representations can be fine-tuned with a single extra layer for "
            "question answering, sentiment analysis or named-entity recognition. It was soon "
            "used in web search ranking and became a standard baseline in natural language "
            "processing research."
        ),
    ),
    WikiPage(
        title="Generative pre-trained transformer",
        pageid=66045029,
        wikibase_item="Q116777014",
        text=(
            "A generative pre-trained transformer (GPT) is a large language model built from "
            "the decoder part of the transformer and trained to predict the next token across "
            "enormous collections of text. After this self-supervised pre-training, the model "
            "is adapted to follow instructions or hold a conversation through fine-tuning and "
            "reinforcement learning from human feedback. OpenAI published the first GPT in "
            "2018 and followed it with GPT-2, GPT-3 and GPT-4, each far larger than the one "
            "before. GPT models write text one token at a time, which lets them draft essays, "
            "answer questions, translate between languages and generate computer code."
        ),
    ),
    WikiPage(
        title="Recurrent neural network",
        pageid=1706303,
        wikibase_item="Q1457734",
        text=(
            "A recurrent neural network (RNN) reads sequential data one element at a time and "
            "carries a hidden state from each step to the next. This internal memory suits "
            "time series, speech, handwriting and text, where the meaning of an element "
            "depends on what came before it. Plain RNNs are hard to train on long sequences "
            "because gradients passed back through many time steps tend to vanish or explode. "
            "Gated variants such as long short-term memory and the gated recurrent unit keep "
            "information over longer spans, and they led sequence modelling until the 2010s "
            "ended."
        ),
    ),
    WikiPage(
        title="Long short-term memory",
        pageid=10711453,
        wikibase_item="Q6673524",
        text=(
            "Long short-term memory (LSTM) is a recurrent neural network whose memory cell is "
            "guarded by input, output and forget gates. The gates learn when to store a value, "
            "when to expose it and when to erase it, which lets error signals flow across "
            "hundreds of time steps without fading away. Sepp Hochreiter and Jürgen "
            "Schmidhuber proposed the design in 1997. LSTMs powered speech recognition on "
            "smartphones, handwriting recognition and early neural machine translation."
        ),
    ),
    WikiPage(
        title="Python (programming language)",
        pageid=23862,
        wikibase_item="Q28865",
        text=(
            "Python is a high-level, general-purpose programming language whose design "
            "stresses readable code through significant indentation. It is dynamically typed "
            "and garbage-collected, and it supports procedural, object-oriented and functional "
            "programming. Guido van Rossum started work on Python in the late 1980s and "
            "released version 0.9 in 1991; Python 3.0, a major revision that broke backward "
            "compatibility, followed in 2008. A large standard library and packages such as "
            "NumPy, pandas and PyTorch have made it the most popular language for data "
            "science and machine learning."
        ),
    ),
    WikiPage(
        title="Python (genus)",
        pageid=24543,
        wikibase_item="Q271401",
        text=(
            "Python is a genus of constricting snakes in the family Pythonidae, found in the "
            "tropics and subtropics of Africa, Asia and Australia. Pythons are not venomous: "
            "they seize prey with their teeth and kill it by coiling around it until it can "
            "no longer breathe. The reticulated python is among the longest snakes in the "
            "world and can exceed six metres. Females lay clutches of eggs and coil around "
            "them, shivering their muscles to keep the eggs warm."
        ),
    ),
)

DEFAULT_REDIRECTS: Mapping[str, str] = MappingProxyType(
    {
        "Transformer (machine learning model)": "Transformer (deep learning architecture)",
        "Transformer (machine learning)": "Transformer (deep learning architecture)",
        "Attention mechanism": "Attention (machine learning)",
        "BERT (Language model)": "BERT (language model)",
        "GPT": "Generative pre-trained transformer",
        "RNN": "Recurrent neural network",
        "LSTM": "Long short-term memory",
        "Python language": "Python (programming language)",
    }
)
