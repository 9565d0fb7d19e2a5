"""``python -m bot.pull_model``: make Ollama pull the model ``config.toml`` names, once.

The compose file runs this before the bot, so a first ``docker compose up`` ends with the
configured model in Ollama's volume; later starts find it there and return at once. It reads
the same settings as the bot (``--config``, ``OLLAMA_HOST``), so the model pulled is the
model the bot asks for. Exit status: 0 pulled or already there, 1 Ollama failed, 2 bad
configuration.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
import ollama

from bot.config import config_report, load_settings
from bot.errors import ConfigError

# Progress is printed at most this often: a pull of a few GB streams thousands of updates.
_PROGRESS_EVERY_S = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.pull_model", description=__doc__)
    parser.add_argument("--config", metavar="PATH", default=None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(config_report(exc), file=sys.stderr)
        return 2
    model, host = settings.llm.model, settings.llm.base_url
    if settings.llm.provider != "ollama":
        # An OpenAI-compatible server loads the models it was started with; none pulls.
        print(f"[llm].provider is {settings.llm.provider!r}: nothing to pull.", flush=True)
        return 0
    client = ollama.Client(host=host)
    try:
        if _is_pulled(client.list().models, model):
            print(f"The model {model} is already pulled in Ollama at {host}.", flush=True)
            return 0
        print(f"Pulling {model} into Ollama at {host} (first start only) ...", flush=True)
        for line in _progress(client.pull(model, stream=True)):
            print(line, flush=True)
    except (ollama.ResponseError, httpx.HTTPError, OSError) as exc:
        reason = exc.error if isinstance(exc, ollama.ResponseError) else type(exc).__name__
        print(
            f"Could not pull {model} from Ollama at {host}: {reason}. Check that Ollama runs "
            "there (OLLAMA_HOST) and that [llm].model names a model it can pull.",
            file=sys.stderr,
        )
        return 1
    print(f"Pulled {model}.", flush=True)
    return 0


def _is_pulled(models: Sequence[Any], wanted: str) -> bool:
    names = {str(getattr(m, "model", "")) for m in models}
    return wanted in names or f"{wanted}:latest" in names


def _progress(updates: Iterator[Mapping[str, Any] | Any]) -> Iterator[str]:
    """Short progress lines from Ollama's stream: each new step, and a percentage now and then."""
    last_status, last_shown = "", 0.0
    for update in updates:
        status = str(_field(update, "status") or "")
        total, completed = _field(update, "total"), _field(update, "completed")
        now = time.monotonic()
        if status != last_status:
            last_status, last_shown = status, now
            yield f"  {status}"
        elif total and completed is not None and now - last_shown >= _PROGRESS_EVERY_S:
            last_shown = now
            yield f"  {status}: {100 * completed / total:.0f}% of {total / 1e9:.1f} GB"


def _field(update: Mapping[str, Any] | Any, name: str) -> Any:
    if isinstance(update, Mapping):
        return update.get(name)
    return getattr(update, name, None)


if __name__ == "__main__":
    sys.exit(main())
