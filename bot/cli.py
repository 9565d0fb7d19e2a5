"""Command line: ``research-agent [ask|chat|demo|conversations|store] ...``.

The same command line is ``research-agent`` (the console script), ``scripts/run`` and
``python -m bot``; usage lines and hints name the one the user ran (:func:`invoked_as`).
This is the only module that configures logging and the only one that turns errors into
exit codes. Every command takes ``--config PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from bot import __version__
from bot.adapters.base import Adapter
from bot.adapters.platforms import chat_adapters
from bot.adapters.render import render_reply
from bot.adapters.terminal import TerminalAdapter, terminal_key
from bot.config import LoggingSettings, Settings, config_report, env_secret, load_settings
from bot.contract import Reply
from bot.core.text import valid_text
from bot.core.urls import redact
from bot.domain import human_time
from bot.errors import ConfigError, ResearchAgentError, StartupError, StoreError
from bot.store import is_url, migrate_store, open_store

if TYPE_CHECKING:
    from bot.runtime import Runtime

_log = logging.getLogger(__name__)

DEMO_QUESTIONS = (
    "What is a transformer in machine learning?",
    "How does the attention mechanism inside it work?",
    "How do GPT and BERT differ?",
)


# scripts/run exports its own name here, since the process it starts is ``python -m bot``.
PROG_VARIABLE = "RESEARCH_AGENT_PROG"
CONSOLE_SCRIPT = "research-agent"


def invoked_as(argv0: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The command the user ran, for usage lines and hints: a hint must name something
    that works where the user typed it (``python -m bot`` fails outside the venv).

    ``scripts/run`` names itself in :data:`PROG_VARIABLE`; the console script is seen in
    ``argv[0]``; anything else was ``python -m bot``.
    """
    env = os.environ if env is None else env
    named = env.get(PROG_VARIABLE, "").strip()
    if named:
        return named
    argv0 = sys.argv[0] if argv0 is None else argv0
    return CONSOLE_SCRIPT if Path(argv0).name == CONSOLE_SCRIPT else "python -m bot"


def _common_options(defaults: bool) -> argparse.ArgumentParser:
    """``--config`` and ``-v``, accepted before or after any (sub)command.

    Only the top level sets defaults: a subparser's default would overwrite a value given
    before the subcommand (``--config prod.toml conversations list``).
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=None if defaults else argparse.SUPPRESS,
        help="the settings file (default: ./config.toml; every key has a default, and a "
        "missing ./config.toml means all defaults)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0 if defaults else argparse.SUPPRESS,
        help="also log to stderr (-vv: debug)",
    )
    return common


class _HelpFormatter(argparse.HelpFormatter):
    """Paragraphs are wrapped to the terminal; one with indented lines (the exit statuses)
    is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = text.split("\n\n")
        return "\n\n".join(
            paragraph
            if any(line.startswith(" ") for line in paragraph.splitlines())
            else super(_HelpFormatter, self)._fill_text(paragraph, width, indent)
            for paragraph in paragraphs
        )


_STARTING = {
    1: "it cannot start (each problem is listed, with its fix)",
    2: "a configuration error (every problem is listed), or bad arguments",
}
_SIGNALS = {130: "Ctrl-C", 143: "SIGTERM (an answer in flight is finished first)"}


def _statuses(statuses: Mapping[int, str]) -> str:
    """An ``exit status:`` paragraph for a help text: the command's own and start-up's, by code."""
    merged = {**_STARTING, **statuses}
    return "\n".join(["exit status:", *(f"  {code:<3}  {merged[code]}" for code in sorted(merged))])


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line; ``prog`` is what usage lines call it (default: :func:`invoked_as`)."""
    prog = invoked_as() if prog is None else prog
    common = _common_options(defaults=False)
    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A research assistant that answers with cited sources from Wikipedia "
        "and Hacker News, in Discord, Slack and the terminal.",
        epilog=f"With no command, {prog} serves the chat platforms whose tokens are set in "
        "the environment: DISCORD_TOKEN; SLACK_BOT_TOKEN with SLACK_APP_TOKEN (Socket Mode) "
        "or SLACK_SIGNING_SECRET (HTTP mode); each may be given as NAME_FILE, the path of a "
        f"file holding it. With none set it opens the terminal chat (`{prog} chat`) if there "
        "is a terminal; with no terminal either it exits at once (status 2), naming the "
        f"variables to set.\n\n`{prog} COMMAND -h` describes each command.\n\n"
        + _statuses({0: "done", 3: "ask, demo: no question could be answered", **_SIGNALS}),
        formatter_class=formatter,
        parents=[_common_options(defaults=True)],
    )
    parser.add_argument("--version", action="version", version=f"research-agent {__version__}")
    parser.add_argument(
        "--wait-on-config-error",
        action="store_true",
        help="when the configuration is wrong, or no chat platform token is set and no "
        "terminal is attached, say so and wait until stopped instead of exiting with status "
        "2 (for a container restarted on every exit, which would otherwise loop)",
    )
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=_port,
        help="serve /healthz, /readyz and /metrics on this port ([metrics].port; 0: none)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = sub.add_parser(
        "ask",
        parents=[common],
        help="answer questions, one conversation",
        description="Answer the questions in order, all in one conversation, so a later "
        "question can refer to an earlier one. Progress goes to stderr, answers to stdout.",
        epilog=_statuses(
            {
                0: "at least one question was answered (even degraded), or only commands run",
                3: "no question could be answered (each failed, an empty one included)",
            }
        ),
        formatter_class=formatter,
    )
    ask.add_argument(
        "--session",
        metavar="ID",
        help="continue the terminal conversation ID (terminal:ID); default: a new "
        "conversation for this run",
    )
    ask.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per question, each on its own line, in the order "
        "asked (status answered, degraded, failed or command); the README lists the fields",
    )
    ask.add_argument(
        "questions",
        nargs="+",
        metavar="QUESTION",
        help='a question, quoted ("What is BERT?"); a /command works too',
    )

    chat = sub.add_parser(
        "chat",
        parents=[common],
        help="interactive chat in the terminal",
        description="Chat in the terminal: each line is a question, or a command (/help "
        "lists them). /quit or Ctrl-D leaves. Lines may also come from a pipe.",
        epilog=_statuses({0: "/quit, Ctrl-D or the end of the input", **_SIGNALS}),
        formatter_class=formatter,
    )
    chat.add_argument(
        "--session",
        metavar="ID",
        default="default",
        help="the terminal conversation to resume, terminal:ID (default: %(default)s)",
    )

    sub.add_parser(
        "demo",
        parents=[common],
        help="three-question demo with a visible summary",
        description="Ask three questions in a new conversation, then show the running "
        "summary the bot keeps of it.",
        epilog=_statuses({0: "done", 3: "no question could be answered"}),
        formatter_class=formatter,
    )

    # "sessions" was the command's first name; it still works.
    conversations = sub.add_parser(
        "conversations",
        aliases=["sessions"],
        parents=[common],
        help="list, show or reset conversations",
        description="The stored conversations of every platform. A conversation is one "
        "Discord channel or thread, one Slack thread or one terminal session, named by its "
        "key (slack:T1:C2:1700000000.0001, terminal:default); for a terminal session its "
        "id (default) is enough. `sessions` is this command's older name.",
        epilog=_statuses({0: "done", 1: "show, reset: no such conversation; or it cannot start"}),
        formatter_class=formatter,
    )
    actions = conversations.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser(
        "list",
        parents=[common],
        help="every conversation",
        description="Every conversation: its key, its number of turns, whether older turns "
        "are summarised, and when it was last active.",
    )
    show = actions.add_parser(
        "show",
        parents=[common],
        help="one conversation's transcript",
        description="One conversation's transcript: its running summary, then each turn, "
        "numbered from 1. Exit status 1: no such conversation.",
    )
    show.add_argument("conversation", metavar="ID", help="a key, or a terminal session id")
    reset = actions.add_parser(
        "reset",
        parents=[common],
        help="forget one conversation",
        description="Forget one conversation, also while the bot runs: its next question "
        "starts afresh. Exit status 1: no such conversation.",
    )
    reset.add_argument("conversation", metavar="ID", help="a key, or a terminal session id")

    store = sub.add_parser(
        "store",
        parents=[common],
        help="move the bot's data to another database",
        description="Move the bot's data to another database.",
    )
    store_actions = store.add_subparsers(dest="action", metavar="ACTION", required=True)
    migrate = store_actions.add_parser(
        "migrate",
        parents=[common],
        help="copy every conversation (and the inbox) into an empty database",
        description="Copy the conversations, their summaries and votes, the inbox and the "
        "embedding cache of FROM into the empty database TO: typically an SQLite file into "
        "PostgreSQL, before several replicas share it. Stop the bot first.",
        epilog=_statuses(
            {
                0: "copied",
                1: "the copy failed; nothing was copied",
                2: "no TO, no file at FROM, FROM and TO the same, or a configuration error",
            }
        ),
        formatter_class=formatter,
    )
    migrate.add_argument("source", metavar="FROM", help="an SQLite file or a postgresql:// URL")
    migrate.add_argument(
        "target",
        metavar="TO",
        nargs="?",
        help="where to (default: the DATABASE_URL environment variable, or the file "
        "DATABASE_URL_FILE names, which keep the password off the command line)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(config_report(exc), file=sys.stderr)
        return _configuration_failed(args)
    if args.metrics_port is not None:
        metrics = dataclasses.replace(settings.metrics, port=args.metrics_port)
        settings = dataclasses.replace(settings, metrics=metrics)
    _configure_logging(settings.logging, verbose=args.verbose)
    for note in settings.deprecations:
        _log.warning("configuration: %s", note)
        print(f"Configuration: {note}", file=sys.stderr)
    if args.command is None and _nobody_to_serve(settings):
        print(nobody_to_serve(invoked_as()), file=sys.stderr)
        return _configuration_failed(args)
    try:
        return asyncio.run(_until_terminated(args, settings))
    except KeyboardInterrupt:
        # Ctrl-C at the chat's prompt (the line editor reads it as a key): the runtime has
        # closed on the way out.
        print("\nInterrupted; bye.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``ask --json ... | head -1``); stop quietly, and keep the
        # interpreter's final flush from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except StartupError as exc:
        print(_startup_report(exc), file=sys.stderr)  # the runtime logged each line
        return 1
    except ResearchAgentError as exc:
        _log.error("cannot start: %s", exc, exc_info=_log.isEnabledFor(logging.DEBUG))
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 1


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65_535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 to 65535)")
    return port


WAITING = (
    "Waiting until stopped (--wait-on-config-error) rather than exiting, which a restart "
    "policy would answer with the same failure again and again. Fix the above, then start "
    "the bot again: with Compose, `docker compose up -d` after changing .env, or "
    "`docker compose restart bot` after changing config.toml or a secret's file."
)


def _configuration_failed(args: argparse.Namespace) -> int:
    """Exit status 2, or with ``--wait-on-config-error`` wait to be stopped first.

    A container's restart policy cannot tell this exit from a crash, and restarting cannot
    fix a configuration: each restart would fail alike, in a loop. Waiting keeps the one
    report at the end of the container's log, where the operator looks.
    """
    if not args.wait_on_config_error:
        return 2
    stops = {signal.SIGTERM, signal.SIGINT}
    # Blocked, the signals wait for sigwait(): even as PID 1 in a container without an
    # init, which the kernel spares every signal it has no handler for. Blocked before
    # saying so, or a stop sent on reading that line could be lost.
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    print(WAITING, file=sys.stderr, flush=True)
    received = signal.sigwait(stops)
    print("Stopped; bye.", file=sys.stderr)
    return 128 + received


class BoundedFormatter(logging.Formatter):
    """Log lines of a bounded length: a message is cut at :data:`MAX_LOG_MESSAGE` characters.

    A record may carry what it did not choose (a server's 10 MB reply inside an exception,
    a fetched page): one such line must not fill the disk or make the log unreadable.
    Tracebacks are kept whole; they are bounded by the code.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if len(message) > MAX_LOG_MESSAGE:
            record.message = (
                f"{message[:MAX_LOG_MESSAGE]}… [{len(message) - MAX_LOG_MESSAGE} more characters]"
            )
        return super().formatMessage(record)


MAX_LOG_MESSAGE = 4000


def _exit_now(status: int) -> NoReturn:
    """End the process without waiting for threads, after flushing what it wrote."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _startup_report(exc: StartupError) -> str:
    """Every problem the start-up checks found, each with its fix, in one report."""
    if len(exc.lines) == 1:
        return f"Cannot start: {exc.lines[0]}"
    numbered = "\n".join(f"  {n}. {line}" for n, line in enumerate(exc.lines, start=1))
    return f"Cannot start; {len(exc.lines)} problems to fix:\n{numbered}"


def _configure_logging(settings: LoggingSettings, *, verbose: int) -> None:
    """Records go to a rotating file; to stderr too with ``-v`` (``-vv``: debug).

    Without ``-v`` nothing from logging reaches the terminal, where the user is chatting:
    a handled failure is explained in the answer, and a traceback is never shown.
    """
    formatter = BoundedFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose > 1 else getattr(logging, settings.level))
    handlers: list[logging.Handler] = []
    if settings.file:
        try:
            Path(settings.file).parent.mkdir(parents=True, exist_ok=True)
            handlers.append(RotatingFileHandler(settings.file, maxBytes=5_000_000, backupCount=3))
        except OSError as exc:
            print(
                f"Cannot write the log file {settings.file} ({exc}); logging to stderr.",
                file=sys.stderr,
            )
            verbose = max(verbose, 1)
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    if not handlers:
        handlers.append(logging.NullHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)


@dataclass(slots=True)
class _Running:
    """What a forced exit must stop: the runtime, once one is up."""

    runtime: Runtime | None = None


async def _until_terminated(args: argparse.Namespace, settings: Settings) -> int:
    """Run the command; SIGTERM (``docker stop``, systemd) and Ctrl-C shut down cleanly.

    Cancelling the main task unwinds through ``Runtime.close``, so an answer in flight gets
    its grace period and background saves are drained before the process exits. A second
    Ctrl-C does not wait for that: the child processes are killed and the process ends at
    once (everything committed is on disk; a question cut off stays on record).
    """
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    running = _Running()
    stopped_by: signal.Signals | None = None

    def stop(signum: signal.Signals) -> None:
        nonlocal stopped_by
        if stopped_by is None:
            stopped_by = signum
            main_task.cancel()
            return
        if signum == signal.SIGINT:
            print("\nInterrupted; bye.", file=sys.stderr)
            if running.runtime is not None:
                running.runtime.abandon()
            _exit_now(130)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await _dispatch(args, settings, running)
    except asyncio.CancelledError:
        if stopped_by is None:
            raise
        if stopped_by == signal.SIGINT:
            print("\nInterrupted; bye.", file=sys.stderr)
            return 130
        print("Stopped; bye.", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _new_terminal_id(kind: str) -> str:
    """A fresh terminal conversation id; the random part keeps two runs in one second apart."""
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


async def _dispatch(args: argparse.Namespace, settings: Settings, running: _Running) -> int:
    command = args.command
    if command == "store":
        return await _migrate_store(args.source, args.target, sys.stdout)
    if command in ("conversations", "sessions"):
        return await _conversations(
            args.action, getattr(args, "conversation", None), settings, sys.stdout
        )
    serving = command is None
    if command == "demo":
        # A low threshold so the running summary appears within three questions.
        memory = dataclasses.replace(settings.memory, summarize_after=2, keep_recent=1)
        settings = dataclasses.replace(settings, memory=memory)
    adapters = chat_adapters(settings) if serving else []
    # Imported here, not at the top: it brings LangChain and the agents (over a second of
    # imports), which --help, --version and a config error have no use for.
    from bot.runtime import Runtime  # noqa: PLC0415 - see above

    async with await Runtime.start(settings, adapters=adapters) as runtime:
        running.runtime = runtime
        for notice in runtime.notices:
            print(notice, file=sys.stderr)
        if command == "ask":
            session = args.session or _new_terminal_id("ask")
            return await _ask(runtime, session, args.questions, as_json=args.json)
        if command == "demo":
            return await _demo(runtime)
        if serving:
            if runtime.adapters:
                return await _serve(runtime, runtime.adapters)
            print(_platform_notice(settings), file=sys.stderr)
            args.session = "default"
        terminal = TerminalAdapter(session=args.session)
        await runtime.add_adapter(terminal)
        await runtime.recover()
        await terminal.run()
        return 0


async def _serve(runtime: Runtime, adapters: Sequence[Adapter[Any]]) -> int:
    """Run the chat adapters until SIGTERM or Ctrl-C (or until one of them dies)."""
    for adapter in adapters:
        await runtime.add_adapter(adapter)
    recovered = await runtime.recover()
    if recovered:
        print(f"Answering {recovered} question(s) left from before the restart.", file=sys.stderr)
    names = " and ".join(adapter.platform.capitalize() for adapter in adapters)
    # Last: supervisors and tests read this line as "ready".
    print(f"research-agent is answering on {names}; Ctrl-C stops it.", file=sys.stderr)
    # The SDKs reconnect on their own; an adapter that stops has given up.
    waits = [asyncio.create_task(adapter.wait_stopped()) for adapter in adapters]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    dead = [adapter.platform for adapter in adapters if not adapter.is_alive]
    _log.error("the %s adapter stopped; shutting down", ", ".join(dead))
    print(f"The {', '.join(dead)} connection was lost for good; stopping.", file=sys.stderr)
    return 1


def nobody_to_serve(prog: str) -> str:
    """Why running with no command, no token and no terminal stops, and what to set."""
    return (
        "Nothing to serve: no chat platform token is set and no terminal is attached; set "
        f"DISCORD_TOKEN, or SLACK_BOT_TOKEN and SLACK_APP_TOKEN (or run `{prog} chat` in a "
        "terminal)."
    )


def _nobody_to_serve(settings: Settings) -> bool:
    """No token and no terminal (a container without ``-it``): a chat nobody could use."""
    tokens = (settings.discord_token, settings.slack_bot_token, settings.slack_app_token)
    return all(token is None for token in tokens) and not sys.stdin.isatty()


def _platform_notice(settings: Settings) -> str:
    configured = [
        name
        for name, token in (
            ("DISCORD_TOKEN", settings.discord_token),
            ("SLACK_BOT_TOKEN", settings.slack_bot_token),
        )
        if token is not None
    ]
    if configured:
        verb = "are" if len(configured) > 1 else "is"
        return (
            f"{' and '.join(configured)} {verb} set, but no chat-platform adapter for "
            f"{'them' if len(configured) > 1 else 'it'} is enabled ([slack].enabled, or not "
            "in this version yet); opening the terminal chat."
        )
    return (
        "No chat platform configured (set DISCORD_TOKEN, or SLACK_BOT_TOKEN and "
        "SLACK_APP_TOKEN); opening the terminal chat."
    )


def reply_json(reply: Reply) -> dict[str, Any]:
    """One ``ask --json`` line; ``answer`` is the complete text a terminal user reads."""
    return {
        "question": reply.question,
        "answer": render_reply(reply, operator=True, plain=True),
        "body": reply.body,
        "status": reply.status,
        "reason": failure_reason(reply),
        "topics": list(reply.topics),
        "sources": [dataclasses.asdict(s) for s in reply.sources],
        "unavailable": list(reply.unavailable),
        "notices": [n.user for n in reply.notices if n.user],
        "notice_details": [
            {"kind": n.kind, "user": n.user, "operator": n.operator} for n in reply.notices
        ],
        "neutralised": {"links": reply.neutralised.links, "mentions": reply.neutralised.mentions},
        "timings": {k: round(v, 4) for k, v in reply.timings.items()},
        "weak_citations": [dataclasses.asdict(w) for w in reply.weak_citations],
        # Citations the bot added to sentences the model left uncited, not the model's own.
        "attributed": [dataclasses.asdict(a) for a in reply.attributions],
        "conversation": reply.conversation,
        # The field's first name, kept for scripts that read it.
        "session": reply.conversation,
    }


def failure_reason(reply: Reply) -> str | None:
    """Why a failed reply failed, in one line; None for an answer, even a degraded one."""
    if reply.status != "failed":
        return None
    if not reply.question.strip():
        return "the question is empty"
    if not reply.sources and reply.unavailable:
        return f"no source could be reached ({', '.join(reply.unavailable)})"
    if reply.notices:
        return reply.notices[-1].user
    return "answering failed; the log says why"


def _unasked_json(terminal: TerminalAdapter, question: str) -> dict[str, Any]:
    """The ``ask --json`` line of a question that started no turn: a command (status
    ``command``, its answer), the empty question or another refusal (``failed``)."""
    said = "\n".join(terminal.notified)
    command = terminal.last_outcome == "command"
    reply = Reply(
        question=question,
        body=said,
        conversation=terminal.conversation,
        status="answered" if command else "failed",
    )
    line = reply_json(reply)
    if command:
        line["status"] = "command"
    elif question.strip():
        line["reason"] = f"not asked ({terminal.last_outcome})"
    return line


async def _ask(runtime: Runtime, session: str, questions: Sequence[str], *, as_json: bool) -> int:
    terminal = TerminalAdapter(session=session, quiet=as_json)
    # Arguments that were not UTF-8 hold surrogates, which not even print() takes.
    questions = [valid_text(question) for question in questions]
    await runtime.add_adapter(terminal)
    statuses: list[str] = []
    for i, question in enumerate(questions):
        if not as_json and len(questions) > 1:
            print(f"{'' if i == 0 else chr(10)}Q: {question}\n")
        reply = await terminal.ask(question)
        if reply is None:
            # A command (its answer is already printed), or nothing to ask (the hint is):
            # one JSON line per question all the same, so line n answers question n.
            line = _unasked_json(terminal, question)
            if line["status"] == "failed":
                statuses.append("failed")
            if as_json:
                print(json.dumps(line, ensure_ascii=False), flush=True)
            continue
        statuses.append(reply.status)
        if as_json:
            print(json.dumps(reply_json(reply), ensure_ascii=False), flush=True)
        else:
            print()
    return exit_status(statuses)


# ``ask`` exits with this when no question could be answered at all.
NOTHING_ANSWERED = 3


def exit_status(statuses: Sequence[str]) -> int:
    """3 when every turn failed (nothing answered at all), else 0: degraded is answered."""
    return NOTHING_ANSWERED if statuses and all(s == "failed" for s in statuses) else 0


async def _demo(runtime: Runtime) -> int:
    session = _new_terminal_id("demo")
    print(f"Demo: three questions in one conversation ({terminal_key(session)}).")
    status = await _ask(runtime, session, DEMO_QUESTIONS, as_json=False)
    # Summaries run in the background; wait for them so the result can be shown.
    await runtime.pipeline.memory.settle()
    state = await runtime.store.conversations.load(terminal_key(session))
    print("\nRunning summary of the conversation:")
    print(state.summary or "(no summary yet: the language model was not reachable)")
    return status


async def _migrate_store(source: str, target: str | None, out: TextIO) -> int:
    """``store migrate FROM [TO]``: FROM's data into the empty database TO."""
    prog = invoked_as()
    # The configuration was loaded, so DATABASE_URL(_FILE) is known to be usable.
    target = (target or env_secret("DATABASE_URL", os.environ) or "").strip()
    if not target:
        print(
            f"Say where to: `{prog} store migrate FROM TO`, or set DATABASE_URL "
            "(or DATABASE_URL_FILE).",
            file=sys.stderr,
        )
        return 2
    problem = await asyncio.to_thread(_migration_problem, source, target)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2

    def report(table: str, rows: int) -> None:
        out.write(f"  {table}: {rows} row(s)\n")
        out.flush()

    out.write(f"Copying {redact(source)} into {redact(target)}:\n")
    try:
        await migrate_store(source, target, progress=report)
    except StoreError as exc:
        print(f"Nothing was copied: {exc}", file=sys.stderr)
        return 1
    out.write(
        "Done. Point the bot at the new database (DATABASE_URL or [memory].database) and "
        "start it; keep the old one until you have checked the conversations "
        f"(`{prog} conversations list`).\n"
    )
    return 0


def _migration_problem(source: str, target: str) -> str | None:
    if not is_url(source) and not Path(source).is_file():
        return f"There is no database file at {source}."
    if source == target or (
        not is_url(source)
        and not is_url(target)
        and Path(source).resolve() == Path(target).resolve()
    ):
        return "FROM and TO are the same database."
    return None


async def _conversations(
    action: str, conversation: str | None, settings: Settings, out: TextIO
) -> int:
    store = await open_store(settings.memory.database)
    conversations = store.conversations
    try:
        if action == "list":
            rows = await conversations.list_all()
            if not rows:
                out.write("No conversations yet.\n")
            for row in rows:
                turns = f"{row.turn_count} turn{'' if row.turn_count == 1 else 's'}"
                summary = ", summarised" if row.has_summary else ""
                out.write(
                    f"{row.conversation}\t{turns}{summary}\t"
                    f"last active {human_time(row.updated_at)}\n"
                )
            return 0
        assert conversation is not None
        # A full key (``slack:T:C:ts``) or a terminal session id (``default``); each action
        # tries both with the one call it needs anyway.
        candidates = (conversation, terminal_key(conversation))
        missing = (
            f"No conversation named {conversation!r}. "
            f"`{invoked_as()} conversations list` shows them.\n"
        )
        if action == "reset":
            for candidate in candidates:
                if await conversations.reset(candidate):
                    out.write(f"Forgot {candidate}.\n")
                    return 0
            out.write(missing)
            return 1
        for candidate in candidates:
            state = await conversations.transcript(candidate)
            if state is not None:
                break
        else:
            out.write(missing)
            return 1
        out.write(f"Conversation {state.conversation}\n")
        # Turns are numbered as the user counts them, from 1; their ids run across every
        # conversation of the database.
        if state.summary:
            covered = sum(1 for turn in state.turns if turn.id <= state.summary_upto)
            out.write(f"\nSummary (up to turn {covered}):\n{state.summary}\n")
        for n, turn in enumerate(state.turns, start=1):
            out.write(f"\n[{n}] {human_time(turn.created_at)} you: {turn.question}\n")
            out.write(_answer_line(turn.status, turn.answer))
            if turn.feedback_up or turn.feedback_down:
                out.write(f"feedback: {turn.feedback_up} up, {turn.feedback_down} down\n")
        return 0
    finally:
        await store.close()


def _answer_line(status: str, answer: str | None) -> str:
    if answer is not None:
        return f"bot: {answer}\n"
    if status == "quarantined":
        return "(quarantined: answering it crashed the bot twice, so it is not tried again)\n"
    if status == "expired":
        return "(expired: the bot was down until it was too old to answer)\n"
    return "(no answer saved)\n"
