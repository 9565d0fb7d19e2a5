"""The terminal adapter: talk to the bot with no chat platform and no tokens.

Lines are read by a daemon thread (a blocking ``readline`` must not sit on the event loop,
and a daemon thread cannot keep the process alive after Ctrl-C) and handed to the loop
through a queue. Answers stream to stdout as the LLM writes them; progress goes to stderr
so ``ask --json`` output stays machine-readable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TextIO

from bot.adapters.base import MessageSink
from bot.domain import InboundMessage, conversation_key
from bot.errors import MemoryStoreError

_log = logging.getLogger(__name__)

HELP = "Commands: /reset forgets this conversation, /help shows this, /quit leaves (or Ctrl-D)."


def terminal_key(session: str) -> str:
    return conversation_key("terminal", session)


class TerminalListener:
    """Shows progress on ``err`` and streams the answer to ``out``."""

    def __init__(self, out: TextIO, err: TextIO, *, prefix: str = "") -> None:
        self._out = out
        self._err = err
        self._live = err.isatty()
        self._status_shown = False
        # Written with the first text: written earlier, clearing the status line (which
        # shares the terminal line) would erase it.
        self._prefix = prefix

    async def on_progress(self, step: str) -> None:
        if self._live:
            self._err.write(f"\r\033[K… {step}")
            self._status_shown = True
        else:
            self._err.write(f"… {step}\n")
        self._err.flush()

    async def on_text(self, text: str) -> None:
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
    """Interactive chat on stdin/stdout, in one conversation."""

    name = "terminal"

    def __init__(
        self,
        sink: MessageSink,
        *,
        session: str,
        reset: Callable[[str], Awaitable[bool]],
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        author: str = "you",
    ) -> None:
        self._sink = sink
        self._reset = reset
        self._key = terminal_key(session)
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr
        self._author = author
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader: threading.Thread | None = None
        self._alive = False

    @property
    def conversation(self) -> str:
        return self._key

    @property
    def is_alive(self) -> bool:
        return self._alive

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._reader = threading.Thread(
            target=self._read_lines, args=(loop,), name="terminal-stdin", daemon=True
        )
        self._alive = True
        self._reader.start()

    async def close(self) -> None:
        if self._alive:
            self._alive = False
            self._lines.put_nowait(None)  # wakes run() if it is waiting for input

    async def send(self, conversation: str, text: str) -> None:
        self._out.write(f"{text}\n")
        self._out.flush()

    async def run(self) -> None:
        """Chat until end of input or ``/quit``."""
        self._out.write(
            f"research-agent: ask me anything. /help lists the commands.\n"
            f"Conversation: {self._key}\n"
        )
        while self._alive:
            self._out.write("\nyou> ")
            self._out.flush()
            line = await self._lines.get()
            if line is None:
                self._out.write("\n")
                break
            if not await self._handle_line(line.strip()):
                break
        await self.close()

    async def _handle_line(self, line: str) -> bool:
        """Returns False when the user asked to leave."""
        command = line.lower()
        if command in {"/quit", "/exit"}:
            return False
        if command == "/help":
            await self.send(self._key, HELP)
        elif command == "/reset":
            await self.send(self._key, await self._forget())
        elif line:
            self._out.write("\n")
            listener = TerminalListener(self._out, self._err, prefix="bot> ")
            message = InboundMessage(line, self._author, self._key, "terminal")
            await self._sink(message, listener)
            listener.clear_status()
            self._out.write("\n")
            self._out.flush()
        return True

    async def _forget(self) -> str:
        try:
            forgotten = await self._reset(self._key)
        except MemoryStoreError:
            _log.exception("reset of %s failed", self._key)
            return "I could not forget this conversation just now; please try again."
        return "Conversation forgotten." if forgotten else "Nothing to forget yet."

    def _read_lines(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            for line in self._in:
                loop.call_soon_threadsafe(self._lines.put_nowait, line)
        except (OSError, ValueError):
            pass  # stdin closed under us: treated as end of input below
        # RuntimeError: the loop is already closed because the process is exiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._lines.put_nowait, None)
