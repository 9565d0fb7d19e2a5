"""The ``research-agent`` console script, installed as ``scripts/run`` and the image install it.

Each test builds a throw-away venv whose own site-packages starts empty and which borrows
the test venv's packages (pip, setuptools, the bot's dependencies) through a ``.pth``
line, so installing the project takes seconds and needs no network: exactly the project's
own install step is what runs.
"""

from __future__ import annotations

import importlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from bot import __version__
from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent


def copy_project(to: Path) -> Path:
    """What an install reads: the package, its metadata and the scripts, nothing else."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "bot", to / "bot", ignore=ignore)
    shutil.copytree(ROOT / "scripts", to / "scripts", ignore=ignore)
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy2(ROOT / name, to / name)
    return to


def throwaway_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(path), "platbase": str(path)})
    (Path(purelib) / "borrowed.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8"
    )
    return path


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "RESEARCH_AGENT_PROG"}
    return subprocess.run(
        args,
        check=False,
        cwd=cwd,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_console_script_is_declared_and_its_target_exists() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (target,) = project["project"]["scripts"].values()
    assert list(project["project"]["scripts"]) == ["research-agent"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is main
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    assert project["tool"]["setuptools"]["packages"]["find"]["include"] == ["bot", "bot.*"]


def test_scripts_venv_installs_the_research_agent_command(tmp_path: Path) -> None:
    source = copy_project(tmp_path / "src")
    venv = throwaway_venv(tmp_path / "venv")
    # The dependencies are in place (borrowed); only the project's own step is left to run.
    (venv / ".installed-requirements").touch()
    step = ["bash", "-c", "source scripts/_venv.sh requirements.txt"]
    first = run(*step, cwd=source, VENV=str(venv))
    assert first.returncode == 0, first.stderr
    assert "Installing the research-agent command" in first.stderr
    command = venv / "bin" / "research-agent"
    assert command.is_file()
    again = run(*step, cwd=source, VENV=str(venv))
    assert again.returncode == 0 and again.stderr == "", "installed once, not at every run"

    # Run from elsewhere: the hint names the command the user typed, not `python -m bot`.
    (tmp_path / "config.toml").write_text('[memory]\ndatabase = "bot.db"\n', encoding="utf-8")
    shown = run(str(command), "conversations", "show", "nope", cwd=tmp_path)
    assert shown.returncode == 1, shown.stderr
    assert "`research-agent conversations list` shows them." in shown.stdout
    # scripts/run (in the same venv) names itself as it was typed.
    script = str(source / "scripts" / "run")
    config = str(tmp_path / "config.toml")
    via_run = run(
        script, "sessions", "show", "nope", "--config", config, cwd=tmp_path, VENV=str(venv)
    )
    assert via_run.returncode == 1, via_run.stderr
    assert f"`{script} conversations list` shows them." in via_run.stdout


def test_the_image_install_puts_the_package_and_the_command_in_place(tmp_path: Path) -> None:
    source = copy_project(tmp_path / "src")
    venv = throwaway_venv(tmp_path / "venv")
    python = venv / "bin" / "python"
    # As the Dockerfile does it, less the download of a build backend (--no-build-isolation).
    installed = run(
        str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        str(source), cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    assert (purelib / "bot" / "agents" / "analysis_worker.py").is_file()
    assert not (purelib / "tests").exists() and not (purelib / "bench").exists()
    # tmp_path holds no bot/: what runs is the installed package.
    version = run(str(venv / "bin" / "research-agent"), "--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"research-agent {__version__}\n"
