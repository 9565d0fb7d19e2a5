"""A stand-in for ``analysis_worker.py`` that misbehaves on request, for tests/test_analysis.py.

Run by the agent exactly like the real worker (``python -I``, request on stdin). The
request's ``keywords`` pick the behaviour: ``keywords[0]`` is the mode and ``keywords[1]``,
where a mode needs it, is the path of a Unix socket to report to.

* ``sleep``: spawn a grandchild that sleeps, send ``"<child pid> <grandchild pid>"`` to
  the Unix socket at ``keywords[1]``, then sleep; both only end when killed.
* ``flood``: write to stdout forever.
* ``garbage``: print something that is not JSON and exit 0.
* ``fail``: print ``boom`` on stderr and exit 3.
* ``env``: print a valid report whose keyword names are this process's environment names.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

SLEEP_S = 60


def _sleep(report_to: str) -> None:
    grandchild = subprocess.Popen(
        [sys.executable, "-I", "-c", f"import time; time.sleep({SLEEP_S})"]
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(report_to)
        sock.sendall(f"{os.getpid()} {grandchild.pid}".encode("ascii"))
    time.sleep(SLEEP_S)


def _flood() -> None:
    chunk = b"x" * 65536
    while True:
        sys.stdout.buffer.write(chunk)


def _env() -> None:
    report = {
        "article_count": 0,
        "per_source": {},
        "average_relevance": 0.0,
        "keyword_frequencies": [[name, 1] for name in sorted(os.environ)],
        "top_articles": [],
    }
    print(json.dumps(report))


def main() -> int:
    keywords = json.loads(sys.stdin.buffer.read())["keywords"]
    mode = keywords[0]
    if mode == "sleep":
        _sleep(keywords[1])
    elif mode == "flood":
        _flood()
    elif mode == "garbage":
        print("this is not json {")
    elif mode == "fail":
        print("boom", file=sys.stderr)
        return 3
    elif mode == "env":
        _env()
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
