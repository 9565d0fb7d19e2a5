"""The analysis agent: keyword statistics computed in an isolated, killable child process.

Each :meth:`AnalysisAgent.analyze` call runs ``analysis_worker.py`` (beside this module) as
``[python, "-I", script]`` with :func:`asyncio.create_subprocess_exec` (never a shell) and
speaks a one-shot JSON protocol over pipes, documented in that script:

* stdin: ``{"keywords": [...], "articles": [{"source", "title", "url", "text", "rank"}...],
  "top_keywords": N}``, then EOF;
* stdout: ``{"article_count", "per_source", "average_relevance", "keyword_frequencies",
  "top_articles"}``, converted here, after validation, into an :class:`AnalysisReport`;
* exit status 0; anything else is a failure (2 means the worker rejected the request).

Isolation:

* ``-I``: the child ignores ``PYTHON*`` variables, and neither the user's site-packages
  nor the script's directory is on its ``sys.path``;
* the child gets a small explicit environment (:func:`_child_env`), never ours, so
  ``DISCORD_TOKEN``, ``SLACK_BOT_TOKEN`` and friends never reach it;
* ``start_new_session=True`` makes the child a process-group leader, so a timeout, a
  cancelled turn or :meth:`AnalysisAgent.close` SIGKILLs the whole group, grandchildren
  included, and the child is always reaped before ``analyze`` returns;
* stdin is written while stdout and stderr are read, so a large request cannot deadlock;
  stdout is capped at ``max_output_bytes`` and stderr at :data:`_STDERR_LIMIT` (its tail
  is kept and logged on failure), both read incrementally.

Start-up: a Python interpreter takes tens of milliseconds of CPU to start, which would
compete with the embedding compute that runs beside the analysis. :meth:`AnalysisAgent.prepare`
starts a child ahead of time (the pipeline calls it while the turn waits on the network);
the child blocks on stdin until :meth:`AnalysisAgent.analyze` feeds it, and its timeout only
starts then. At most :data:`_MAX_SPARES` prepared children wait at once.

Raises (from ``analyze``):

* :class:`AnalysisTimeout`: the exchange ran past ``timeout_s``; the group was killed;
* :class:`AnalysisError`: the agent is closed, the child could not start, exited non-zero,
  printed more than ``max_output_bytes``, or printed something that is not a valid report;
* :class:`asyncio.CancelledError` propagates after the group is killed and reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.config import AnalysisSettings
from bot.domain import AnalysisReport, Article
from bot.errors import AnalysisError, AnalysisTimeout

_log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("analysis_worker.py")

_CHUNK = 64 * 1024
_STDERR_LIMIT = 16 * 1024
# After the group is killed every pipe should hit EOF at once; this only bounds the wait
# for a process that left the group (setsid) while still holding one of our pipes.
_REAP_GRACE_S = 2.0
_MAX_SPARES = 4


def _child_env() -> dict[str, str]:
    """The child's whole environment: nothing inherited, so no secret can leak into it.

    ``python -I`` ignores ``PYTHON*`` variables anyway; the worker reads and writes bytes,
    so it does not depend on the locale either. These only give it a sane baseline.
    """
    return {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


class AnalysisAgent:
    """Runs the analysis worker for one turn at a time (concurrent calls are fine).

    Create it once in ``main()``; call :meth:`close` at shutdown to kill any child still
    running.
    """

    def __init__(
        self,
        settings: AnalysisSettings,
        *,
        python: str = sys.executable,
        script: Path | None = None,
    ) -> None:
        self._settings = settings
        self._python = python
        self._script = script if script is not None else WORKER_SCRIPT
        self._children: set[asyncio.subprocess.Process] = set()
        self._spares: list[asyncio.Task[asyncio.subprocess.Process]] = []
        self._closed = False

    def prepare(self) -> None:
        """Start a child now so the next :meth:`analyze` need not wait for one. Never raises."""
        if self._closed or len(self._spares) >= _MAX_SPARES:
            return
        self._spares.append(asyncio.create_task(self._spawn(), name="analysis-spare"))

    async def analyze(self, articles: Sequence[Article], keywords: Sequence[str]) -> AnalysisReport:
        """Compute an :class:`AnalysisReport` for ``articles`` against ``keywords``.

        Raises:
            AnalysisTimeout: the worker ran past ``timeout_s`` and was killed.
            AnalysisError: the agent is closed, or the worker failed or printed garbage.
        """
        if self._closed:
            raise AnalysisError("the analysis agent is closed")
        payload = _encode_request(articles, keywords, self._settings.top_keywords)
        deadline = asyncio.get_running_loop().time() + self._settings.timeout_s
        proc = await self._take_child()
        try:
            if self._closed:  # close() ran while the child was starting
                raise AnalysisError("the analysis agent was closed")
            stdout, stderr, overflow, timed_out = await _exchange(
                proc, payload, self._settings.max_output_bytes, deadline
            )
        finally:
            await _kill_and_reap(proc)
            self._children.discard(proc)
        return self._interpret(proc, stdout, stderr, overflow=overflow, timed_out=timed_out)

    async def close(self) -> None:
        """Kill and reap every child still running; later ``analyze`` calls fail. Idempotent."""
        self._closed = True
        spares, self._spares = self._spares, []
        await asyncio.gather(*spares, return_exceptions=True)
        children = list(self._children)
        self._children.clear()
        for proc in children:
            _log.info("killing analysis worker pid %s at shutdown", proc.pid)
        await asyncio.gather(*(_kill_and_reap(proc) for proc in children))

    def kill_children(self) -> None:
        """SIGKILL every child (and its process group) now, without reaping (a forced exit)."""
        for proc in list(self._children):
            _kill_group(proc)

    async def _take_child(self) -> asyncio.subprocess.Process:
        """A prepared child if one started cleanly and is still waiting, else a new one."""
        while self._spares:
            spare = self._spares.pop(0)
            try:
                proc = await spare
            except AnalysisError as exc:
                _log.warning("a prepared analysis worker failed to start: %s", exc)
                continue
            if proc.returncode is None:
                return proc
            self._children.discard(proc)
        return await self._spawn()

    async def _spawn(self) -> asyncio.subprocess.Process:
        try:
            proc = await asyncio.create_subprocess_exec(
                self._python,
                "-I",
                str(self._script),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_child_env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise AnalysisError(f"cannot start the analysis worker {self._python}: {exc}") from exc
        self._children.add(proc)
        return proc

    def _interpret(
        self,
        proc: asyncio.subprocess.Process,
        stdout: bytes,
        stderr: bytes,
        *,
        overflow: bool,
        timed_out: bool,
    ) -> AnalysisReport:
        if self._closed and proc.returncode != 0:
            raise AnalysisError("the analysis agent was closed during the analysis")
        if timed_out:
            _log_failure(proc, "timed out", stderr)
            raise AnalysisTimeout(
                f"the analysis worker ran past {self._settings.timeout_s:g}s and was killed"
            )
        if overflow:
            _log_failure(proc, "too much output", stderr)
            raise AnalysisError(
                f"the analysis worker printed more than {self._settings.max_output_bytes} bytes"
            )
        if proc.returncode != 0:
            _log_failure(proc, f"exit status {proc.returncode}", stderr)
            raise AnalysisError(f"the analysis worker exited with status {proc.returncode}")
        try:
            return parse_report(stdout)
        except AnalysisError:
            _log_failure(proc, "unusable output", stderr)
            raise


def _encode_request(articles: Sequence[Article], keywords: Sequence[str], top: int) -> bytes:
    request = {
        "keywords": list(keywords),
        "articles": [
            {"source": a.source, "title": a.title, "url": a.url, "text": a.text, "rank": a.rank}
            for a in articles
        ],
        "top_keywords": top,
    }
    # ensure_ascii: lone surrogates in scraped text cannot make the encoding fail.
    return json.dumps(request, ensure_ascii=True).encode("ascii")


def _log_failure(proc: asyncio.subprocess.Process, reason: str, stderr: bytes) -> None:
    _log.warning(
        "analysis worker pid %s failed (%s); stderr: %s",
        proc.pid,
        reason,
        stderr.decode("utf-8", "replace").strip() or "<empty>",
    )


async def _exchange(
    proc: asyncio.subprocess.Process, payload: bytes, max_output: int, deadline: float
) -> tuple[bytes, bytes, bool, bool]:
    """Feed stdin while draining stdout and stderr; return (stdout, stderr, overflow, timed_out).

    Never returns before every pipe task finished: on timeout, overflow, error or
    cancellation the group is killed first, so the readers see EOF promptly.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    overflow = False

    def on_overflow() -> None:
        nonlocal overflow
        overflow = True
        _kill_group(proc)

    feeder = asyncio.create_task(_feed(proc.stdin, payload))
    out_task = asyncio.create_task(_read_capped(proc.stdout, max_output, on_overflow))
    err_task = asyncio.create_task(_read_tail(proc.stderr, _STDERR_LIMIT))
    exit_task = asyncio.create_task(proc.wait())
    tasks: set[asyncio.Task[Any]] = {feeder, out_task, err_task, exit_task}
    timed_out = False
    try:
        budget = max(deadline - asyncio.get_running_loop().time(), 0.0)
        _, pending = await asyncio.wait(tasks, timeout=budget)
        timed_out = bool(pending)
    finally:
        # Reached on timeout, on cancellation and after a normal exit alike; killing an
        # exited group is a no-op, and it removes any grandchild the worker left behind.
        _kill_group(proc)
        await _settle(proc, tasks)
    return _bytes_of(out_task), _bytes_of(err_task), overflow, timed_out


def _bytes_of(task: asyncio.Task[bytes]) -> bytes:
    """What a reader task collected; nothing if it was cancelled or failed (already logged)."""
    if task.cancelled() or task.exception() is not None:
        return b""
    return task.result()


async def _feed(stdin: asyncio.StreamWriter, payload: bytes) -> None:
    try:
        stdin.write(payload)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        # The child exited without reading all its input; its exit status says why.
        _log.debug("analysis worker closed its stdin early")
    finally:
        stdin.close()


async def _read_capped(
    stream: asyncio.StreamReader, limit: int, on_overflow: Callable[[], None]
) -> bytes:
    """Read to EOF keeping at most ``limit`` bytes; call ``on_overflow`` once if exceeded."""
    data = bytearray()
    exceeded = False
    while chunk := await stream.read(_CHUNK):
        if exceeded:
            continue  # keep draining until the killed group closes the pipe
        if len(data) + len(chunk) > limit:
            exceeded = True
            on_overflow()
            continue
        data += chunk
    return b"" if exceeded else bytes(data)


async def _read_tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read to EOF keeping the last ``limit`` bytes (a traceback ends with its cause)."""
    data = bytearray()
    while chunk := await stream.read(_CHUNK):
        data += chunk
        if len(data) > limit:
            del data[: len(data) - limit]
    return bytes(data)


async def _settle(proc: asyncio.subprocess.Process, tasks: set[asyncio.Task[Any]]) -> None:
    """Let the pipe tasks finish after a kill; force the pipes shut if something holds them."""
    _, pending = await asyncio.wait(tasks, timeout=_REAP_GRACE_S)
    if pending:
        _log.warning(
            "analysis worker pid %s: pipes still open %.1fs after the kill; closing them",
            proc.pid,
            _REAP_GRACE_S,
        )
        for task in pending:
            task.cancel()
        _close_transport(proc)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            _log.debug("analysis worker pipe task failed: %r", result)


async def _kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    _kill_group(proc)
    try:
        await asyncio.wait_for(proc.wait(), _REAP_GRACE_S)
    except TimeoutError:
        # proc.wait() also waits for the pipes; only a process that escaped the group
        # can still hold them. Closing the transport releases them and reaps the child.
        _close_transport(proc)
        await proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's process group (the child leads it: ``start_new_session``)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _close_transport(proc: asyncio.subprocess.Process) -> None:
    # asyncio.subprocess.Process has no public close(); its transport does.
    transport = getattr(proc, "_transport", None)
    if transport is not None:
        transport.close()


def parse_report(raw: bytes) -> AnalysisReport:
    """Validate the worker's stdout and convert it into an :class:`AnalysisReport`.

    Raises:
        AnalysisError: not JSON, or not the documented shape.
    """
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise AnalysisError(f"the analysis worker printed invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AnalysisError("the analysis worker's output is not a JSON object")
    per_source = _field(data, "per_source", dict)
    return AnalysisReport(
        article_count=_count(_field(data, "article_count", int), "article_count"),
        per_source={
            _expect(k, str, "per_source key"): _count(v, f"per_source[{k!r}]")
            for k, v in per_source.items()
        },
        average_relevance=_fraction(_field(data, "average_relevance", object), "average_relevance"),
        keyword_frequencies=tuple(
            (_expect(word, str, "keyword_frequencies word"), _count(n, "keyword_frequencies"))
            for word, n in _pairs(_field(data, "keyword_frequencies", list), "keyword_frequencies")
        ),
        top_articles=tuple(
            (_expect(title, str, "top_articles title"), _fraction(score, "top_articles"))
            for title, score in _pairs(_field(data, "top_articles", list), "top_articles")
        ),
    )


def _field(data: dict[str, Any], key: str, kind: type[Any]) -> Any:
    if key not in data:
        raise AnalysisError(f"the analysis worker's output lacks {key!r}")
    return _expect(data[key], kind, key)


def _expect(value: Any, kind: type[Any], what: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AnalysisError(f"the analysis worker's {what} is not of type {kind.__name__}")
    return value


def _count(value: Any, what: str) -> int:
    number: int = _expect(value, int, what)
    if number < 0:
        raise AnalysisError(f"the analysis worker's {what} is negative")
    return number


def _fraction(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnalysisError(f"the analysis worker's {what} is not a number")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise AnalysisError(f"the analysis worker's {what} is not between 0 and 1")
    return number


def _pairs(items: list[Any], what: str) -> list[tuple[Any, Any]]:
    if not all(isinstance(item, list) and len(item) == 2 for item in items):
        raise AnalysisError(f"the analysis worker's {what} is not a list of pairs")
    return [(item[0], item[1]) for item in items]
