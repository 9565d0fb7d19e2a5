"""The terminal adapter: talk to the bot with no chat platform and no tokens.

At a terminal, lines come from prompt_toolkit's line editor, awaited on the event loop: it
reads in raw mode with bracketed paste, so a long paste arrives whole (a terminal in its
usual cooked mode cuts a line at 4095 characters), and it brings history (Up/Down) and the
usual editing keys. From a pipe or a file (tests, scripts) there is nothing to edit and no
line limit: a daemon thread reads the lines (a blocking ``readline`` must not sit on the
event loop, and a daemon thread cannot keep the process alive after Ctrl-C) and hands them
to the loop through a queue. Every line goes through the intake like a chat message: ``/reset``,
``/sources``, ``/session`` and ``/help`` are the shared commands; only ``/quit`` is the
terminal's own. Answers stream to stdout as the LLM writes them; progress goes to stderr,
so ``ask --json`` output stays machine-readable. The terminal is the operator's window:
notices show their operator hint (``ollama pull llama3.2``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from bot.adapters.base import IntakePort, Outcome
from bot.adapters.render import render_tail
from bot.contract import Author, InboundMessage, Platform, Reply, conversation_key

if TYPE_CHECKING:
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

_log = logging.getLogger(__name__)

PROMPT = "you> "

QUIT_HINT = "/quit leaves (or Ctrl-D)."


def terminal_key(session: str) -> str:
    return conversation_key("terminal", session)


@dataclass(frozen=True, slots=True)
class TerminalTarget:
    """Nothing to address in a terminal but the session the line was typed in."""

    session: str


class TerminalReply:
    """Shows progress on ``err``, streams the body to ``out``, then the Sources and notices."""

    def __init__(self, out: TextIO, err: TextIO, *, prefix: str = "", quiet: bool = False):
        self._out = out
        self._err = err
        self._quiet = quiet
        self._live = err.isatty()
        self._status_shown = False
        # Written with the first text: written earlier, clearing the status line (which
        # shares the terminal line) would erase it.
        self._prefix = prefix
        self._streamed = False

    @property
    def reply_id(self) -> str | None:
        return None  # a terminal line cannot be edited later

    async def on_progress(self, step: str) -> None:
        if self._quiet:
            return
        if self._live:
            self._err.write(f"\r\033[K… {step}")
            self._status_shown = True
        else:
            self._err.write(f"… {step}\n")
        self._err.flush()

    async def on_text(self, text: str) -> None:
        if self._quiet or not text:
            return
        self._write(text)
        self._streamed = True

    async def on_reply(self, reply: Reply) -> None:
        if self._quiet:
            return
        # The body streamed already, unless the turn failed before it could.
        body = "" if self._streamed else reply.body
        self._write(body + render_tail(reply, operator=True, plain=True))
        self._streamed = True
        self.clear_status()

    def _write(self, text: str) -> None:
        self.clear_status()
        self._out.write(self._prefix + text)
        self._prefix = ""
        self._out.flush()

    def clear_status(self) -> None:
        if self._status_shown:
            self._err.write("\r\033[K")
            self._err.flush()
            self._status_shown = False


class TerminalAdapter:
    """Questions typed (``run``) or given on the command line (``ask``), one conversation."""

    platform: Platform = "terminal"
    admins = "the operator"
    command_prefix = "/"
    own_commands: tuple[str, ...] = (QUIT_HINT,)
    # The operator at the keyboard is not rate limited.
    rate_limit_per_minute: float | None = 0
    # A question from an earlier run has nobody waiting for it at this terminal.
    recovers = False

    def __init__(
        self,
        *,
        session: str,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        author: str = "you",
        quiet: bool = False,
        editor: tuple[Input, Output] | None = None,
    ) -> None:
        """``editor`` forces the line editor on the given prompt_toolkit input and output
        (tests); by default it is used when stdin and stdout are both terminals."""
        self._intake: IntakePort | None = None
        self._session = session
        self._key = terminal_key(session)
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr
        self._author = Author(author, author, is_admin=True)
        self._quiet = quiet
        self._editor = editor
        self._reader: _LineReader | None = None
        # What the intake did with the last line, and what it said back without a turn (a
        # command's answer, the empty line's hint): ``ask --json`` reports both.
        self.last_outcome: Outcome | None = None
        self.notified: list[str] = []
        self._alive = False
        self._stopped = asyncio.Event()
        # Event ids need only be unique per process and run: the pid and a counter.
        self._ids = (
            f"{os.getpid()}-{datetime.now(UTC):%Y%m%d%H%M%S}-{n}" for n in itertools.count()
        )

    @property
    def conversation(self) -> str:
        return self._key

    @property
    def is_alive(self) -> bool:
        return self._alive

    async def check(self) -> str | None:
        """Nothing to check: the terminal needs no credentials."""
        return None

    async def start(self, intake: IntakePort) -> None:
        self._intake = intake
        self._alive = True

    async def close(self) -> None:
        if self._alive:
            self._alive = False
            if self._reader is not None:
                self._reader.stop()  # wakes run() if it is waiting for input
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ------------------------------------------------------------------ Adapter

    def open_reply(
        self, message: InboundMessage[TerminalTarget], *, reply_id: str | None = None
    ) -> TerminalReply:
        prefix = "" if self._quiet else "bot> "
        return TerminalReply(self._out, self._err, prefix=prefix, quiet=self._quiet)

    async def notify(
        self, message: InboundMessage[TerminalTarget], text: str, *, private: bool
    ) -> None:
        self.notified.append(text)
        # ``ask --json`` keeps stdout for JSON; a command's answer goes to stderr there.
        (self._err if self._quiet else self._out).write(f"{text}\n")

    def encode_target(self, target: TerminalTarget) -> Mapping[str, Any]:
        return {"session": target.session}

    def decode_target(self, data: Mapping[str, Any]) -> TerminalTarget:
        if "session" not in data:
            raise ValueError(f"not a terminal target: {data!r}")
        return TerminalTarget(str(data["session"]))

    # ------------------------------------------------------------------ input

    async def ask(self, text: str) -> Reply | None:
        """Submit one line and wait for its answer; None when no turn ran (a command)."""
        if self._intake is None:
            raise RuntimeError("the terminal adapter is not started")
        self.notified = []
        submission = await self._intake.submit(
            InboundMessage(
                text=text,
                author=self._author,
                conversation=self._key,
                platform=self.platform,
                event_id=next(self._ids),
                sent_at=datetime.now(UTC),
                target=TerminalTarget(self._session),
            )
        )
        self.last_outcome = submission.outcome
        if submission.done is None:
            return None
        # Shielded: Ctrl-C or SIGTERM cancels this wait, not the turn, which shutdown then
        # gives its grace period to finish.
        return await asyncio.shield(submission.done)

    async def run(self) -> None:
        """Chat until end of input or ``/quit``."""
        reader = self._reader = self._line_reader()
        self._out.write(
            f"research-agent: ask me anything. /help lists the commands; {QUIT_HINT}\n"
            f"Conversation: {self._key}\n"
        )
        while self._alive:
            self._out.write("\n")
            self._out.flush()
            line = await reader.read()
            if line is None:
                self._out.write("\n")
                break
            line = line.strip()
            if line.lower() in {"/quit", "/exit"}:
                break
            self._out.write("\n")
            await self.ask(line)
            self._out.write("\n")
            self._out.flush()
        await self.close()

    def _line_reader(self) -> _LineReader:
        if self._editor is not None:
            return _EditorReader(*self._editor)
        if _is_tty(self._in) and _is_tty(self._out):
            return _EditorReader(None, None)
        return _PipeReader(self._in, self._out)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


class _LineReader(Protocol):
    async def read(self) -> str | None:
        """Show the prompt and return the next line; None at end of input or after stop()."""

    def stop(self) -> None:
        """Make a pending or later read() return None."""


class _EditorReader:
    """Lines from a terminal through prompt_toolkit's line editor (history, editing keys)."""

    def __init__(self, editor_input: Input | None, editor_output: Output | None) -> None:
        # Imported here: the pipe path (tests, scripts, `ask`) never needs it.
        from prompt_toolkit import PromptSession  # noqa: PLC0415
        from prompt_toolkit.history import InMemoryHistory  # noqa: PLC0415

        self._session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(), input=editor_input, output=editor_output
        )
        self._stopped = False

    async def read(self) -> str | None:
        if self._stopped:
            return None
        try:
            # Ctrl-C at the prompt raises KeyboardInterrupt, which exits like Ctrl-C anywhere.
            # Ctrl-C is a key here (raw mode); SIGINT stays with the process's own handler.
            return await self._session.prompt_async(PROMPT, handle_sigint=False)
        except EOFError:  # Ctrl-D, or stop()
            return None

    def stop(self) -> None:
        self._stopped = True
        app = self._session.app
        if app.is_running:
            app.exit(exception=EOFError())


class _PipeReader:
    """Lines from a pipe or a file, read by a daemon thread into a queue."""

    def __init__(self, stream: TextIO, out: TextIO) -> None:
        self._in = stream
        self._out = out
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._thread: threading.Thread | None = None

    async def read(self) -> str | None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._read_lines,
                args=(asyncio.get_running_loop(),),
                name="terminal-stdin",
                daemon=True,
            )
            self._thread.start()
        self._out.write(PROMPT)
        self._out.flush()
        return await self._lines.get()

    def stop(self) -> None:
        self._lines.put_nowait(None)

    def _read_lines(self, loop: asyncio.AbstractEventLoop) -> None:
        if isinstance(self._in, io.TextIOWrapper):
            # Bytes that are not UTF-8 would end the input with a decoding error; kept as
            # surrogates instead, they reach the intake, which makes them U+FFFD.
            self._in.reconfigure(errors="surrogateescape")
        try:
            for line in self._in:
                loop.call_soon_threadsafe(self._lines.put_nowait, line)
        except (OSError, ValueError):
            pass  # stdin closed under us: treated as end of input below
        # RuntimeError: the loop is already closed because the process is exiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._lines.put_nowait, None)
