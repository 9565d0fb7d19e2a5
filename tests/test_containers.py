"""The container files, checked without Docker, and what the bot does for them, for real.

No Docker engine runs where these tests run (README: Docker), so nothing here pulls, builds
or starts a container. What is checked: that Dockerfile, compose.yaml and
deploy/compose.secrets.yaml hold what the README says of them (pinned images, an init, a
mounted config.toml, a health check, no restart loop), and that the commands they give the
bot do what they count on, in real ``python -m bot`` processes: the health check's exact
command against a running bot, and the wait on a configuration error.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bot.cli import WAITING
from tests.processes import ROOT, bot_env, crash, descendants
from tests.test_ops import free_port

BUILT_IMAGE = "research-agent:latest"
# How long a bot that would exit at once is given to do so.
EXIT_AT_ONCE_S = 1.5


def load_yaml(path: Path) -> dict[str, Any]:
    loaded = YAML(typ="safe").load(path)
    assert isinstance(loaded, dict), path
    return loaded


def compose() -> dict[str, Any]:
    return load_yaml(ROOT / "compose.yaml")


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def bots() -> dict[str, dict[str, Any]]:
    """The services that run this project's image."""
    return {name: s for name, s in services().items() if s.get("image") == BUILT_IMAGE}


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, ``(KEYWORD, arguments)``, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, rest = pending.strip().partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
        pending = ""
    return instructions


def option(command: list[str], name: str) -> str:
    """The value given to ``name`` in ``command``."""
    assert name in command, command
    return command[command.index(name) + 1]


def test_the_base_image_is_a_pinned_python_of_the_projects_version() -> None:
    (base,) = [args for keyword, args in dockerfile() if keyword == "FROM"]
    # A patch release on a named Debian release: `3.11-slim` moves under a rebuild.
    found = re.fullmatch(r"python:(3\.\d+)\.\d+-slim-(bookworm|trixie)", base)
    assert found, base
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert found.group(1) == pyproject["tool"]["mypy"]["python_version"]


def test_every_image_compose_pulls_is_pinned_and_the_rest_is_built_here() -> None:
    built = {s["image"] for s in services().values() if "build" in s}
    assert built == {BUILT_IMAGE}
    for name, service in services().items():
        image = service["image"]
        if image in built:
            continue
        repository, _, tag = image.partition(":")
        # A version (a major at least: postgres's data directory is per major), never
        # `latest` or nothing, which change under a pull.
        assert re.match(r"\d", tag), f"{name}: {image}"
        if repository == "ollama/ollama":
            assert re.fullmatch(r"\d+\.\d+\.\d+", tag), image


def test_the_readme_names_the_images_as_pinned() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (base,) = [args for keyword, args in dockerfile() if keyword == "FROM"]
    assert f"`{base}`" in readme
    assert f"`{services()['ollama']['image']}`" in readme


def test_config_toml_is_mounted_read_only_not_built_into_the_image() -> None:
    instructions = dockerfile()
    copied = [args for keyword, args in instructions if keyword == "COPY"]
    assert not any("config.toml" in args for args in copied), copied
    (workdir,) = [args for keyword, args in instructions if keyword == "WORKDIR"]
    for name, service in bots().items():
        command = service.get("command", [])
        # The settings the bot reads: --config, or config.toml in its working directory.
        target = option(command, "--config") if "--config" in command else f"{workdir}/config.toml"
        mounts = {m.split(":")[1]: m.split(":") for m in service.get("volumes", [])}
        assert target in mounts, f"{name} does not mount {target}"
        source, _, mode = mounts[target]
        assert mode == "ro", f"{name}: {target}"
        assert (ROOT / source).is_file(), f"{name}: {source}"


def test_the_python_services_and_ollama_run_under_an_init() -> None:
    for name in [*bots(), "ollama"]:
        assert services()[name].get("init") is True, name


def test_a_restarted_bot_waits_on_a_configuration_error_rather_than_loop() -> None:
    for name, service in bots().items():
        if service.get("restart", "no") == "no":
            continue
        # Any non-zero exit is restarted (on-failure too): the bot must not exit.
        assert "--wait-on-config-error" in service["command"], name
    assert services()["model-pull"]["restart"] == "no"
    assert services()["bot"]["restart"] == "unless-stopped"


def test_compose_v2_is_required_and_said_so() -> None:
    if "name" not in compose():
        return
    # `docker-compose` 1.29 (Debian 12's) refuses the top-level name.
    assert "Compose v2 is required" in (ROOT / "compose.yaml").read_text(encoding="utf-8")
    assert "Compose v2 is required" in (ROOT / "README.md").read_text(encoding="utf-8")


def health_check(service: Mapping[str, Any]) -> tuple[list[str], int]:
    """The health check's command, run as the image runs it, and the port it probes."""
    test = service["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], "the image has no curl; Python it has"
    found = re.search(r"http://127\.0\.0\.1:(\d+)/healthz", " ".join(test))
    assert found, test
    return [sys.executable, *test[2:]], int(found.group(1))


async def run_health_check(command: list[str], port: int, probed: int) -> int:
    """The health check's exit status, pointed at ``probed`` instead of ``port``."""
    pointed = [part.replace(f":{port}/", f":{probed}/") for part in command]
    proc = await asyncio.create_subprocess_exec(
        *pointed, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(proc.wait(), 30)


async def test_the_bots_health_check_passes_on_a_running_bot_and_fails_once_it_stopped(
    write_config: Callable[..., Path],
) -> None:
    service = services()["bot"]
    command, port = health_check(service)
    assert option(service["command"], "--metrics-port") == str(port)
    probed = free_port()
    # The chat in the terminal: a real bot with its runtime up, waiting for a question.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(write_config()),
        "--metrics-port", str(probed), "chat",
        cwd=ROOT, env=bot_env(), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readuntil(b"you> "), 60)
        assert await run_health_check(command, port, probed) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 60)
    assert await run_health_check(command, port, probed) != 0


async def waiting_bot(config: Path) -> tuple[asyncio.subprocess.Process, str]:
    """``python -m bot --wait-on-config-error`` as a container runs it (no terminal, no
    token), once it has said what is wrong and that it waits; and what it said."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(config), "--wait-on-config-error",
        cwd=ROOT, env=bot_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    said = ""
    async with asyncio.timeout(60):
        while WAITING not in said:
            line = await proc.stderr.readline()
            assert line, f"it exited ({await proc.wait()}) without waiting:\n{said}"
            said += line.decode()
    return proc, said


@pytest.mark.parametrize("problem", ["no token", "a configuration error"])
async def test_a_configuration_problem_is_said_once_then_waited_on_until_stopped(
    tmp_path: Path, problem: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[llm]\ntemprature = 0.2\n" if problem != "no token" else "")
    proc, said = await waiting_bot(config)
    try:
        if problem == "no token":
            assert "Nothing to serve" in said and "DISCORD_TOKEN" in said
        else:
            assert "Configuration error" in said and "temprature" in said
        # Exiting now would be what the restart policy loops on.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(proc.wait(), EXIT_AT_ONCE_S)
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert rest.decode() == "Stopped; bye.\n"


def test_as_pid_1_without_an_init_the_wait_still_ends_at_sigterm(tmp_path: Path) -> None:
    """Docker without ``init: true`` makes the bot PID 1 of its PID namespace, which the
    kernel spares the signals it has no handler for; the wait must still end at
    ``docker stop``'s SIGTERM, sent from outside the namespace as here."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-p", "-f", "true"], check=False).returncode:
        pytest.skip("no unshare, or no permission to make a PID namespace (root only)")
    (tmp_path / "config.toml").write_text("")
    with subprocess.Popen(
        [unshare, "-p", "-f", sys.executable, "-c",
         "import os, sys; assert os.getpid() == 1; sys.argv[0] = 'bot'; "
         "from bot.cli import main; sys.exit(main())",
         "--config", str(tmp_path / "config.toml"), "--wait-on-config-error"],
        cwd=ROOT, env=bot_env(), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        try:
            assert proc.stderr is not None
            said = ""
            while WAITING not in said:
                line = proc.stderr.readline()
                assert line, f"it exited ({proc.wait()}) without waiting:\n{said}"
                said += line.decode()
            (bot,) = descendants(proc.pid)
            os.kill(bot, signal.SIGTERM)
            assert proc.stderr.read().decode() == "Stopped; bye.\n"
            # unshare exits with the status of the process it started.
            assert proc.wait(10) == 128 + signal.SIGTERM
        finally:
            if proc.poll() is None:
                crash(proc.pid)  # unshare and the bot in its namespace
                proc.wait()


def test_the_secrets_template_gives_each_token_of_the_bot_as_a_file() -> None:
    template = load_yaml(ROOT / "deploy" / "compose.secrets.yaml")
    bot = template["services"]["bot"]
    base = services()["bot"]["environment"]
    tokens = {name for name in base if name != "OLLAMA_HOST"}
    files = {name.removesuffix("_FILE"): path for name, path in bot["environment"].items()}
    assert set(files) == tokens
    assert sorted(bot["secrets"]) == sorted(template["secrets"])
    for secret, definition in template["secrets"].items():
        assert f"/run/secrets/{secret}" in files.values(), secret
        assert definition == {"file": f"./secrets/{secret}"}


def test_tokens_stay_out_of_git_and_of_the_build_context() -> None:
    def patterns(name: str) -> set[str]:
        lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
        return {line.strip().strip("/") for line in lines if not line.startswith("#")}

    for name in (".gitignore", ".dockerignore"):
        assert {".env", "secrets", "compose.override.yaml"} <= patterns(name), name


def test_the_dockerfiles_install_of_the_project_builds_from_what_it_copies(
    tmp_path: Path,
) -> None:
    """``pip install --no-deps .`` in the image, on exactly the files copied before it:
    the wheel holds every module (and the project's commands, once it declares any)."""
    instructions = dockerfile()
    (install,) = [
        i for i, (keyword, args) in enumerate(instructions)
        if keyword == "RUN" and "pip install --no-deps ." in args
    ]  # fmt: skip
    source = tmp_path / "app"
    source.mkdir()
    for keyword, args in instructions[:install]:
        if keyword != "COPY":
            continue
        *copied, _destination = args.split()
        for name in copied:
            path = ROOT / name.rstrip("/")
            if path.is_dir():
                shutil.copytree(
                    path, source / path.name, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(path, source / path.name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
         "--no-build-isolation", "--quiet", "--wheel-dir", str(tmp_path / "wheels"),
         str(source)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next((n for n in names if n.endswith("entry_points.txt")), None)
        declared = archive.read(entry_points).decode() if entry_points else ""
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "bot").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for script in pyproject["project"].get("scripts", {}):
        assert f"{script} =" in declared, script
