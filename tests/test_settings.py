"""Settings: TOML file, environment overrides, secret files, clear errors."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from forgea_gh import errors, settings
from tests.support import ROOT


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FORGEA_GH_"):
            monkeypatch.delenv(name)


def test_example_config_loads_and_uses_the_development_secret() -> None:
    config = settings.load(ROOT / "config.example.toml")
    assert config.server.host == "127.0.0.1"
    assert config.database.url == "sqlite:///./forgea_gh.db"
    assert config.database.synchronous == "FULL"
    assert config.webhook.max_body_bytes == 26_214_400
    assert config.uses_development_secret()


def test_example_config_documents_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text()
    for section_name, section in settings.Settings.model_fields.items():
        assert f"[{section_name}]" in text
        assert section.annotation is not None
        for key in section.annotation.model_fields:
            assert f"\n{key} = " in text, f"{section_name}.{key} is not in config.example.toml"
    # ... each with a comment of its own, on the line above it.
    lines = text.splitlines()
    for above, line in itertools.pairwise(lines):
        if " = " in line and not line.startswith("#"):
            assert above.startswith("#"), f"no comment above {line!r} in config.example.toml"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[webhook]\nsecrets = ["a"]\n')
    monkeypatch.setenv("FORGEA_GH_SERVER__PORT", "9100")
    monkeypatch.setenv("FORGEA_GH_WEBHOOK__SECRETS", '["b", "c"]')
    config = settings.load(path)
    assert config.server.port == 9100
    assert config.server.host == "0.0.0.0"
    assert config.webhook_secrets() == [b"b", b"c"]


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[worker]\nconcurrency = 3\n")
    monkeypatch.setenv("FORGEA_GH_CONFIG", str(path))
    assert settings.load().worker.concurrency == 3


def test_secrets_from_file_add_to_the_list(tmp_path: Path) -> None:
    secret_file = tmp_path / "secrets"
    secret_file.write_text("from-file-1\n\nfrom-file-2\n")
    path = tmp_path / "c.toml"
    path.write_text(f'[webhook]\nsecrets = ["inline"]\nsecrets_file = "{secret_file}"\n')
    assert settings.load(path).webhook_secrets() == [b"inline", b"from-file-1", b"from-file-2"]


def test_status_token_from_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    path = tmp_path / "c.toml"
    path.write_text(f'[status]\ntoken_file = "{token_file}"\n')
    assert settings.load(path).status_token() == "s3cret"


def test_unreadable_secret_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[webhook]\nsecrets_file = "{tmp_path / "missing"}"\n')
    with pytest.raises(errors.ConfigError, match=r"webhook\.secrets_file: cannot read"):
        settings.load(path).webhook_secrets()


def test_no_secret_is_an_error_naming_the_key(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"^webhook\.secrets: no webhook secret"):
        settings.load(None).require_webhook_secrets()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[worker]\nconcurrency = 0\n", "worker.concurrency: Input should be greater than"),
        ("[server]\nport = 'x'\n", "server.port: Input should be a valid integer"),
        ("[server]\nprot = 1\n", "server.prot: unknown key"),
        ("[databse]\nurl = 'x'\n", "databse: unknown key"),
        ("[database]\nurl = 'mysql://x'\n", "database.url: Value error, must start with sqlite"),
        ("[log]\nformat = 'xml'\n", "log.format: Input should be"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(errors.ConfigError, match=message):
        settings.load(path)


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[server\n")
    with pytest.raises(errors.ConfigError, match="not valid TOML"):
        settings.load(path)


def test_a_list_in_the_environment_that_is_not_json_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FORGEA_GH_WEBHOOK__SECRETS", "s3cret")
    with pytest.raises(errors.ConfigError) as raised:
        settings.load(None)
    message = str(raised.value)
    assert message.startswith("invalid configuration: webhook.secrets: FORGEA_GH_WEBHOOK__SECRETS")
    assert "JSON list" in message
    assert "TOML" not in message


def test_a_config_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe[server]\n")
    with pytest.raises(errors.ConfigError, match="not valid TOML: not UTF-8 text"):
        settings.load(path)


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="config file not found"):
        settings.load(tmp_path / "nope.toml")


def test_serve_without_a_secret_stops_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "x.db"}"\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "forgea_gh", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("forgea-gh: webhook.secrets: no webhook secret configured")


def test_serve_with_invalid_config_stops_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[worker]\nmax_attempts = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "forgea_gh", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "forgea-gh: invalid configuration: worker.max_attempts: "
        "Input should be greater than or equal to 1"
    ]
