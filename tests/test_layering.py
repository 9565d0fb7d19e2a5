"""The layers of ``bot/`` stay as docs/architecture.md draws them.

Read from the source (every ``import`` and ``from ... import``, also inside functions), so
a wrong import fails here before it becomes a habit:

* adapters know their platform and the contract, nothing of the intake, the pipeline, the
  agents or the store;
* agents know their job: no chat platform, no intake, no pipeline;
* the store knows nothing above it;
* only the store's backends talk to a database: nothing else imports a driver or holds
  SQL.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

BOT = Path(__file__).resolve().parent.parent / "bot"

# Packages each layer must not import (a name and everything below it).
FORBIDDEN = {
    "bot.adapters": ("bot.intake", "bot.pipeline", "bot.agents", "bot.store", "bot.runtime"),
    "bot.agents": ("bot.adapters", "bot.intake", "bot.pipeline", "bot.runtime"),
    "bot.store": ("bot.adapters", "bot.intake", "bot.pipeline", "bot.agents", "bot.runtime"),
    "bot.pipeline": ("bot.adapters", "bot.intake", "bot.runtime"),
    "bot.core": ("bot.adapters", "bot.intake", "bot.pipeline", "bot.agents", "bot.store"),
    "bot.contract": ("bot.",),
}
DRIVERS = ("sqlite3", "aiosqlite", "asyncpg", "psycopg")
# Where a database driver and SQL may appear: the store's backends.
BACKENDS = ("bot.store.sqlite", "bot.store.postgres")
# The statements both backends run: SQL, but no driver (each backend brings its own).
SHARED_SQL = "bot.store.sql"
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE|"
    r"ALTER\s+TABLE|PRAGMA\s+\w+|BEGIN\s+IMMEDIATE)\b",
    re.IGNORECASE | re.DOTALL,
)


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(BOT.rglob("*.py")):
        parts = path.relative_to(BOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imported(tree: ast.AST, module: str) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                package = module.rsplit(".", node.level)[0]
                yield f"{package}.{node.module}" if node.module else package
            elif node.module:
                yield node.module


def within(name: str, package: str) -> bool:
    return name == package.rstrip(".") or name.startswith(
        package if package.endswith(".") else package + "."
    )


def test_the_module_list_is_not_empty() -> None:
    names = [name for name, _ in modules()]
    assert "bot.contract" in names and "bot.store.sqlite" in names


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=str)
def test_each_layer_imports_only_what_is_below_it(module: str, path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set(imported(tree, module))
    for layer, forbidden in FORBIDDEN.items():
        if not within(module, layer):
            continue
        wrong = sorted(n for n in names for f in forbidden if within(n, f) and not within(n, layer))
        assert wrong == [], f"{module} imports {wrong}, which its layer ({layer}) must not"


@pytest.mark.parametrize(("module", "path"), list(modules()), ids=str)
def test_only_the_store_backends_talk_to_a_database(module: str, path: Path) -> None:
    if any(within(module, backend) for backend in BACKENDS):
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    drivers = sorted(n for n in imported(tree, module) for d in DRIVERS if within(n, d))
    assert drivers == [], f"{module} imports a database driver: {drivers}"
    if within(module, SHARED_SQL):
        return
    statements = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
    ]
    # Docstrings may name a statement in prose; code may not hold one.
    docstrings = {
        ast.get_docstring(node, clean=False)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    }
    sql = [s for s in statements if s not in docstrings]
    assert sql == [], f"{module} holds SQL: {sql[:2]}"
