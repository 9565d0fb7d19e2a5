"""``python -m bot`` as a real process serving the chat fakes: started, crashed, stopped.

Each bot runs in a process group of its own, so SIGKILL takes its embedding workers and
analysis children with it, as a real crash does: nothing gets to clean up. Its stderr is
read as it comes (never left to fill the pipe), and :meth:`ServedBot.wait_for` waits for a
line without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = "Ctrl-C stops it."
START_TIMEOUT_S = 60.0


def bot_env(**extra: str) -> dict[str, str]:
    """The environment of a bot under test: no tokens but the ones given, no model hub."""
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_SECRET"))}
    env.pop("OLLAMA_HOST", None)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


class ServedBot:
    """One ``python -m bot`` process serving the platforms its environment configures."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr = ""
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, config: Path, env: Mapping[str, str], *args: str) -> ServedBot:
        """Start it (``args``: more options, ``-v`` to log to stderr too) and wait until
        it serves (its adapters are connected and ready)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "--config", str(config), *args,
            cwd=ROOT, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        bot = cls(proc)
        try:
            await asyncio.wait_for(bot.wait_for(READY), START_TIMEOUT_S)
        except BaseException:
            await bot.kill()
            raise
        return bot

    @property
    def recovered(self) -> int:
        """How many questions it said it answers from before its start."""
        marker = "Answering "
        for line in self.stderr.splitlines():
            if line.startswith(marker) and "left from before the restart" in line:
                return int(line[len(marker) :].split()[0])
        return 0

    async def wait_for(self, text: str) -> None:
        """Until ``text`` appears on its stderr; fails if it exits first."""
        async with self._changed:
            await self._changed.wait_for(lambda: text in self.stderr or self._reader.done())
        if text not in self.stderr:
            raise AssertionError(f"the bot exited without saying {text!r}:\n{self.stderr}")

    async def kill(self) -> None:
        """SIGKILL the bot and everything it started: a crash, with no clean-up at all."""
        if self.proc.returncode is None:
            crash(self.proc.pid)
        await self._finish()

    async def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, as ``docker stop`` sends it; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(self._finish(), timeout_s)
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def _finish(self) -> None:
        await self.proc.wait()
        await self._reader

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._changed:
                self.stderr += line.decode(errors="replace")
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()


@asynccontextmanager
async def bots() -> AsyncIterator[list[ServedBot]]:
    """The bots a test starts; any still running at the end are killed."""
    started: list[ServedBot] = []
    try:
        yield started
    finally:
        for bot in started:
            await bot.kill()


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid`` (children, grandchildren ...), by pid, with its cmdline."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Any process on the machine may have rewritten its name or arguments into bytes
            # that are not UTF-8: they are read, not trusted.
            stat = (entry / "stat").read_bytes().decode(errors="replace")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name in parentheses may hold spaces: fields follow its closing one.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
        commands[int(entry.name)] = command
    found: dict[int, str] = {}
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = commands.get(child, "")
        todo.extend(children.get(child, []))
    return found


def embedding_workers(pid: int) -> list[int]:
    """The embedding workers of bot ``pid``: the children of its forkserver."""
    below = descendants(pid)
    servers = [p for p, command in below.items() if "forkserver" in command]
    return [p for server in servers for p in descendants(server)]


def crash(pid: int) -> None:
    """SIGKILL process ``pid`` and everything it started, as a crash would.

    All but multiprocessing's resource tracker: it outlives the crash (as it does when
    the kernel kills the bot alone) and, once its pipe closes, removes the semaphores the
    bot left in /dev/shm, which a test would otherwise leak on every kill.
    """
    below = descendants(pid)
    for victim in [pid, *(p for p, command in below.items() if "resource_tracker" not in command)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of process ``pid``'s sockets: whose a connection a fake server
    saw is, by the port it came from."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            # sl, local address:port (hex), remote, state, queues, ..., inode (the 10th).
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
