"""Sample data shared by the tests of the pipeline's pure modules."""

from __future__ import annotations

from bot.contract import Source

SOURCES = [
    Source(
        1, "Python (programming language)", "https://en.wikipedia.org/wiki/Python", "wikipedia", 0.9
    ),
    Source(2, "Python 3.13 released", "https://news.ycombinator.com/item?id=1", "hackernews", 0.7),
    Source(3, "Guido van Rossum", "https://en.wikipedia.org/wiki/Guido", "wikipedia", 0.5),
]
