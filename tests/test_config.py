from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Secret, config_report, env_secret, load_settings
from bot.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_config_loads_with_the_documented_defaults() -> None:
    settings = load_settings(Path(__file__).parent.parent / "config.toml", env={})
    assert settings.llm.model == "llama3.2"
    assert settings.sources.wikipedia.endpoint == "https://en.wikipedia.org/w/api.php"
    assert settings.embeddings.backend == "sentence-transformers"
    assert settings.discord_token is None


def test_values_are_typed_and_relative_paths_resolve_against_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[llm]\ntemperature = 1\n[memory]\ndatabase = "state/bot.db"\n'
        '[sources.wikipedia]\nlanguage = "de"\n',
    )
    settings = load_settings(path, env={})
    assert settings.llm.temperature == 1.0 and isinstance(settings.llm.temperature, float)
    assert settings.memory.database == str(tmp_path / "state" / "bot.db")
    assert settings.sources.wikipedia.endpoint == "https://de.wikipedia.org/w/api.php"


def test_the_onnx_backend_is_opt_in_and_int8_by_default(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, ""), env={}).embeddings.onnx_quantize is True
    text = '[embeddings]\nbackend = "onnx"\nonnx_quantize = false\n'
    emb = load_settings(write(tmp_path, text), env={}).embeddings
    assert emb.backend == "onnx" and emb.onnx_quantize is False


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[llm]\nmodle = "x"', "'modle' in [llm]"),
        ("[llm]\ntemperature = 3", "[llm].temperature must be between 0 and 2"),
        ("[llm]\nkeyword_max_tokens = 8", "[llm].keyword_max_tokens must be between 16"),
        ('[sources]\ntimeout_s = "fast"', "[sources].timeout_s must be a number"),
        ("[sources.wikipedia]\nresults_per_keyword = true", "results_per_keyword"),
        (
            "[sources.hackernews]\nresults_per_keyword = 0",
            "[sources.hackernews].results_per_keyword",
        ),
        ('[embeddings]\nbackend = "word2vec"', "[embeddings].backend must be one of"),
        ("[embeddings]\nworkers = 2.5", "[embeddings].workers must be a whole number"),
        ("[embeddings]\nonnx_quantize = 1", "[embeddings].onnx_quantize must be true or false"),
        ("[memory]\nsummarize_after = 1", "[memory].summarize_after must be between"),
        ('[analysis]\nenabled = "yes"', "[analysis].enabled must be true or false"),
        ("[bogus]\nx = 1", "unknown key 'bogus' in the top level"),
        ("llm = 3", "[llm] must be a table"),
        ('discord_token = "abc"', "set the DISCORD_TOKEN environment variable instead"),
        ('SLACK_BOT_TOKEN = "xoxb"', "set the SLACK_BOT_TOKEN environment variable instead"),
        ('slack_app_token = "xapp"', "set the SLACK_APP_TOKEN environment variable instead"),
        ("[llm\nmodel=", "not valid TOML"),
        ('[llm]\nbase_url = "localhost:11434"', "[llm].base_url must be an http(s) URL"),
        ('[sources.hackernews]\napi_url = "not a url"', "[sources.hackernews].api_url must be"),
        ('[llm]\nmodel = " "', "[llm].model must not be empty"),
        ('[sources]\nuser_agent = ""', "[sources].user_agent must not be empty"),
        (
            "[memory]\nsummarize_after = 4\nkeep_recent = 4",
            "[memory].keep_recent (4) must be smaller than [memory].summarize_after (4)",
        ),
    ],
)
def test_bad_values_fail_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    assert named in str(caught.value)


def test_an_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_environment_overrides_and_secrets_are_hidden(tmp_path: Path) -> None:
    env = {"OLLAMA_HOST": "10.1.2.3:11434", "DISCORD_TOKEN": "very-secret", "SLACK_BOT_TOKEN": " "}
    settings = load_settings(write(tmp_path, ""), env=env)
    assert settings.llm.base_url == "http://10.1.2.3:11434"
    assert isinstance(settings.discord_token, Secret)
    assert settings.discord_token.reveal() == "very-secret"
    assert settings.slack_bot_token is None
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings.discord_token)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("ollama.internal:8080", "http://ollama.internal:8080"),
        ("https://ollama.example.org", "https://ollama.example.org:443"),
        ("http://user:pw@gpu-box/", "http://user:pw@gpu-box:11434"),
        ("[::1]", "http://[::1]:11434"),
    ],
)
def test_ollama_host_is_read_as_ollama_reads_it(tmp_path: Path, host: str, url: str) -> None:
    settings = load_settings(write(tmp_path, ""), env={"OLLAMA_HOST": host})
    assert settings.llm.base_url == url


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), env={})
    with pytest.raises(AttributeError):
        settings.llm.model = "other"  # type: ignore[misc]


def test_a_key_a_release_dropped_is_accepted_with_a_note_naming_the_release(
    tmp_path: Path,
) -> None:
    settings = load_settings(write(tmp_path, "[embeddings]\ntop_k = 5\nworkers = 2\n"), env={})
    assert settings.embeddings.workers == 2
    (note,) = settings.deprecations
    assert "[embeddings].top_k" in note and "0.2.0" in note and "delete the line" in note
    assert load_settings(write(tmp_path, ""), env={}).deprecations == ()


def test_the_deprecations_field_cannot_be_set_from_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'deprecations'"):
        load_settings(write(tmp_path, 'deprecations = ["x"]\n'), env={})


def test_the_shipped_config_file_loads_without_notes() -> None:
    settings = load_settings(Path(__file__).resolve().parent.parent / "config.toml", env={})
    assert settings.deprecations == ()


# ------------------------------------------------------------------------ the database


def test_a_postgresql_url_is_kept_as_written_and_a_path_is_resolved(tmp_path: Path) -> None:
    url = "postgresql://bot@db.internal:5432/research"
    settings = load_settings(write(tmp_path, f'[memory]\ndatabase = "{url}"\n'), env={})
    assert settings.memory.database == url
    socket = "postgresql:///research?host=/run/postgresql"
    settings = load_settings(write(tmp_path, f'[memory]\ndatabase = "{socket}"\n'), env={})
    assert settings.memory.database == socket
    settings = load_settings(write(tmp_path, '[memory]\ndatabase = "bot.db"\n'), env={})
    assert settings.memory.database == str(tmp_path / "bot.db")


def test_database_url_overrides_the_file_and_keeps_its_password(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://bot:s3cret@db:5432/research"}
    settings = load_settings(write(tmp_path, '[memory]\ndatabase = "bot.db"\n'), env=env)
    assert settings.memory.database == env["DATABASE_URL"]


@pytest.mark.parametrize(
    "url",
    ["postgresql://bot:s3cret@db/research", "postgres://db/research?password=s3cret"],
)
def test_a_database_password_in_the_file_is_refused_like_a_token(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL") as caught:
        load_settings(write(tmp_path, f'[memory]\ndatabase = "{url}"\n'), env={})
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "env", "named"),
    [
        ('[memory]\ndatabase = "mysql://db/x"\n', {}, "[memory].database"),
        ('[memory]\ndatabase = "postgresql:///x"\n', {}, "[memory].database"),
        ("", {"DATABASE_URL": "bot.db"}, "DATABASE_URL"),
        ("[memory]\npool_size = 0\n", {}, "[memory].pool_size"),
        ("[memory]\nlease_s = 0.1\n", {}, "[memory].lease_s"),
        ("[metrics]\nport = 70000\n", {}, "[metrics].port"),
        ("[discord]\nshard_count = -1\n", {}, "[discord].shard_count"),
        ("[embeddings]\nthreads = -1\n", {}, "[embeddings].threads"),
    ],
)
def test_bad_database_and_replica_settings_fail_naming_them(
    tmp_path: Path, text: str, env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env=env)
    assert named in str(caught.value)


def test_replica_settings_default_to_one_process_and_no_metrics(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), env={})
    assert (settings.memory.pool_size, settings.memory.lease_s) == (10, 30.0)
    assert settings.metrics.port == 0
    assert settings.discord.shard_count == 0


# ------------------------------------------------------------------- every problem at once


def test_every_problem_of_the_file_and_the_environment_is_reported_at_once(
    tmp_path: Path,
) -> None:
    text = (
        "discord = 3\n"
        '[llm]\nmodle = "x"\ntemperature = 5\n'
        "[memory]\nkeep_recent = -1\nsummarize_after = 4\n"
        '[sources]\ntimeout_s = "fast"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={"OLLAMA_HOST": "http://"})
    problems = caught.value.problems
    assert problems == (
        "[discord] must be a table",
        "unknown key 'modle' in [llm]; expected one of: provider, base_url, model, "
        "temperature, timeout_s, first_token_timeout_s, call_timeout_s, context_tokens, "
        "max_tokens, summary_max_tokens, keyword_max_tokens",
        "[llm].temperature must be between 0 and 2, not 5.0",
        "[memory].keep_recent must be between 0 and 10000, not -1",
        "[sources].timeout_s must be a number, not 'fast'",
        "OLLAMA_HOST='http://' names no host",
    ), "and no comparison of keep_recent's default with the file's summarize_after"
    assert str(caught.value) == "; ".join(problems)
    report = config_report(caught.value)
    assert report.startswith("Configuration errors; 6 problems to fix:\n  1. [discord] must")
    assert "\n  6. OLLAMA_HOST" in report


def test_one_problem_is_reported_on_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, "[llm]\ntemperature = 5\n"), env={})
    assert config_report(caught.value) == (
        "Configuration error: [llm].temperature must be between 0 and 2, not 5.0"
    )


@pytest.mark.parametrize(
    ("text", "variable"),
    [
        ('[discord]\ntoken = "abc"\n', "DISCORD_TOKEN"),
        ('[discord]\nDISCORD_TOKEN = "abc"\n', "DISCORD_TOKEN"),
        ('[slack]\ntoken = "xoxb"\n', "SLACK_BOT_TOKEN"),
        ('[slack]\nbot_token = "xoxb"\n', "SLACK_BOT_TOKEN"),
        ('[slack]\napp_token = "xapp"\n', "SLACK_APP_TOKEN"),
        ('[slack]\nsigning_secret = "s"\n', "SLACK_SIGNING_SECRET"),
        ('[llm]\nslack_bot_token = "xoxb"\n', "SLACK_BOT_TOKEN"),
    ],
)
def test_a_token_under_a_platforms_table_is_refused_like_a_top_level_one(
    tmp_path: Path, text: str, variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), env={})
    (problem,) = caught.value.problems  # not "unknown key" as well
    assert "does not belong in config.toml: tokens come from the environment" in problem
    assert f"set the {variable} environment variable instead" in problem
    assert f"{variable}_FILE" in problem
    assert "abc" not in problem and "xoxb" not in problem


# ------------------------------------------------------------------- secrets as files


@pytest.mark.parametrize(
    ("variable", "attribute"),
    [
        ("DISCORD_TOKEN", "discord_token"),
        ("SLACK_BOT_TOKEN", "slack_bot_token"),
        ("SLACK_APP_TOKEN", "slack_app_token"),
        ("SLACK_SIGNING_SECRET", "slack_signing_secret"),
    ],
)
def test_each_token_can_come_from_a_file(tmp_path: Path, variable: str, attribute: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("tok-123\n", encoding="utf-8")  # as `echo tok-123 > secret` writes it
    settings = load_settings(write(tmp_path, ""), env={f"{variable}_FILE": str(secret)})
    value = getattr(settings, attribute)
    assert isinstance(value, Secret) and value.reveal() == "tok-123"
    assert "tok-123" not in repr(settings)


def test_the_database_url_can_come_from_a_file(tmp_path: Path) -> None:
    url = "postgresql://bot:s3cret@db:5432/research"
    secret = tmp_path / "database-url"
    secret.write_text(f"{url}\n", encoding="utf-8")
    settings = load_settings(write(tmp_path, ""), env={"DATABASE_URL_FILE": str(secret)})
    assert settings.memory.database == url
    assert env_secret("DATABASE_URL", {"DATABASE_URL_FILE": str(secret)}) == url
    assert env_secret("DATABASE_URL", {"DATABASE_URL": f" {url} "}) == url
    assert env_secret("DATABASE_URL", {}) is None


def test_secret_files_that_cannot_be_used_are_reported_without_the_secret(
    tmp_path: Path,
) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    env = {
        "DISCORD_TOKEN": "tok-123",
        "DISCORD_TOKEN_FILE": str(token),
        "SLACK_BOT_TOKEN_FILE": str(tmp_path / "missing"),
        "SLACK_APP_TOKEN_FILE": str(tmp_path),  # a directory
        "SLACK_SIGNING_SECRET_FILE": str(empty),
        "DATABASE_URL_FILE": str(binary),
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, ""), env=env)
    assert caught.value.problems == (
        "DISCORD_TOKEN and DISCORD_TOKEN_FILE are both set; set only one of them "
        "(DISCORD_TOKEN_FILE is the path of a file holding the value, as Docker secrets give "
        "it)",
        f"SLACK_BOT_TOKEN_FILE names {tmp_path / 'missing'}, which cannot be read "
        "(No such file or directory)",
        f"SLACK_APP_TOKEN_FILE names {tmp_path}, which cannot be read (Is a directory)",
        f"SLACK_SIGNING_SECRET_FILE names {empty}, which is empty",
        f"DATABASE_URL_FILE names {binary}, which is not UTF-8 text",
    )
    assert "tok-123" not in str(caught.value)
