"""Configuration: one TOML file, overridden by environment variables.

Precedence, highest first: `FORGEA_GH_<SECTION>__<KEY>` environment
variables, then the TOML file (`--config` or `FORGEA_GH_CONFIG`), then the
defaults below. Secrets may also come from files (`*_file` keys), so they
never have to sit in the TOML file or the environment. This is the only
module that reads configuration; everything else receives a `Settings`.
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from pathlib import Path
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from forgea_gh import errors

# The secret config.example.toml ships with, so a local run works out of the
# box. Start-up warns loudly when it is in use.
DEVELOPMENT_SECRET = "forgea-dev-secret-not-for-production"

CONFIG_ENV_VAR = "FORGEA_GH_CONFIG"
ENV_PREFIX = "FORGEA_GH_"
ENV_DELIMITER = "__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    shutdown_grace_seconds: float = Field(10.0, gt=0)


class DatabaseSettings(_Section):
    url: str = "sqlite:///./forgea_gh.db"
    # FULL: an acknowledged delivery survives power loss. NORMAL survives a
    # process crash but may lose the last commits on power loss.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    busy_timeout_ms: int = Field(5000, ge=0)

    @pydantic.field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith("sqlite:///"):
            raise ValueError("must start with sqlite:/// (e.g. sqlite:///./forgea_gh.db)")
        return url

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///")


class WebhookSettings(_Section):
    secrets: list[SecretStr] = Field(default_factory=list)
    # A file with one secret per line, added after `secrets`.
    secrets_file: str = ""
    # GitHub caps payloads at 25 MB.
    max_body_bytes: int = Field(26_214_400, gt=0)
    # Local forwarding only (smee.io): when the raw body does not verify, also
    # accept a JSON body when GitHub signed a canonical re-encoding of it.
    accept_reserialized: bool = False


class WorkerSettings(_Section):
    poll_interval_seconds: float = Field(1.0, gt=0)
    concurrency: int = Field(8, ge=1, le=256)
    max_attempts: int = Field(8, ge=1)
    backoff_base_seconds: float = Field(2.0, ge=0)
    backoff_max_seconds: float = Field(900.0, ge=0)
    lease_seconds: float = Field(60.0, gt=0)


class StatusSettings(_Section):
    token: SecretStr = SecretStr("")
    token_file: str = ""


class ApiSettings(_Section):
    # Bearer token for /api ("" = the admin API is disabled and answers 503).
    token: SecretStr = SecretStr("")
    token_file: str = ""


class GitHubSettings(_Section):
    # https://api.github.com, or a GitHub Enterprise Server's https://HOST/api/v3.
    api_url: str = "https://api.github.com"
    # A personal or fine-grained access token ("" = none) ...
    token: SecretStr = SecretStr("")
    token_file: str = ""
    # ... or a GitHub App: its id and the path of its PEM private key.
    app_id: int = Field(0, ge=0)
    private_key_file: str = ""
    # The commit status context learners see on their commits.
    status_context: str = "forgea/verification"
    # Account (user or organisation) that owns provisioned lab repositories.
    owner: str = ""
    # Longest wait for a rate limit inside one job; longer waits reschedule the job.
    max_wait_seconds: float = Field(60.0, ge=0)
    # Per-request timeout.
    timeout_seconds: float = Field(10.0, gt=0)

    @pydantic.field_validator("api_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return url.rstrip("/")


class RedeliverySettings(_Section):
    # How often the reconciler asks GitHub for failed deliveries (needs hooks
    # or app = true, and GitHub credentials).
    interval_minutes: float = Field(15, gt=0)
    # Repository hooks to reconcile, as "owner/repo#hook_id".
    hooks: list[str] = Field(default_factory=list)
    # Also reconcile the GitHub App's own webhook (needs App credentials).
    app: bool = False

    @pydantic.field_validator("hooks")
    @classmethod
    def _hook_refs(cls, hooks: list[str]) -> list[str]:
        for hook in hooks:
            repo, _, hook_id = hook.partition("#")
            if repo.count("/") != 1 or not hook_id.isdigit():
                raise ValueError(f"{hook!r} is not owner/repo#hook_id")
        return hooks

    def enabled(self) -> bool:
        return bool(self.hooks) or self.app


class LabsSettings(_Section):
    # Sessions ACTIVE or VERIFYING with no activity for this many days become
    # EXPIRED (checked hourly); 0 disables expiry.
    session_ttl_days: float = Field(0, ge=0)


class SmeeSettings(_Section):
    # A smee.io channel (https://smee.io/...) that `serve` forwards into its own
    # receiver ("" = none).
    url: str = ""
    # Where forwarded deliveries go ("" = this daemon's /webhooks/github).
    target: str = ""

    @pydantic.field_validator("url", "target")
    @classmethod
    def _http_url_or_empty(cls, url: str) -> str:
        if url and not url.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL or empty")
        return url


class RetentionSettings(_Section):
    # Completed jobs (and their deliveries) older than this are pruned by the
    # scheduler; 0 keeps them forever. Dead letters and the audit log are
    # never pruned.
    completed_days: float = Field(14, ge=0)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console", "auto"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    webhook: WebhookSettings = WebhookSettings()
    worker: WorkerSettings = WorkerSettings()
    status: StatusSettings = StatusSettings()
    api: ApiSettings = ApiSettings()
    github: GitHubSettings = GitHubSettings()
    redelivery: RedeliverySettings = RedeliverySettings()
    labs: LabsSettings = LabsSettings()
    smee: SmeeSettings = SmeeSettings()
    retention: RetentionSettings = RetentionSettings()
    log: LogSettings = LogSettings()

    def webhook_secrets(self) -> list[bytes]:
        """Every configured webhook secret, in order: the first one signs."""
        found = [s.get_secret_value() for s in self.webhook.secrets]
        if self.webhook.secrets_file:
            text = _read_secret_file("webhook.secrets_file", self.webhook.secrets_file)
            found.extend(line.strip() for line in text.splitlines())
        return [s.encode() for s in found if s]

    def require_webhook_secrets(self) -> list[bytes]:
        secrets = self.webhook_secrets()
        if not secrets:
            raise errors.ConfigError(
                "webhook.secrets: no webhook secret configured (set webhook.secrets in the "
                "config file, FORGEA_GH_WEBHOOK__SECRETS, or webhook.secrets_file)"
            )
        return secrets

    def uses_development_secret(self) -> bool:
        return DEVELOPMENT_SECRET.encode() in self.webhook_secrets()

    def receiver_url(self) -> str:
        """This daemon's own webhook URL, for local tools (`deliver`, `smee`)."""
        host = self.server.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server.port}/webhooks/github"

    def smee_target(self) -> str:
        """Where the smee forwarder posts: `smee.target`, else this daemon's receiver."""
        return self.smee.target or self.receiver_url()

    def status_token(self) -> str:
        if self.status.token_file:
            return _read_secret_file("status.token_file", self.status.token_file).strip()
        return self.status.token.get_secret_value()

    def github_token(self) -> str:
        if self.github.token_file:
            return _read_secret_file("github.token_file", self.github.token_file).strip()
        return self.github.token.get_secret_value()

    def github_private_key(self) -> str:
        if not self.github.private_key_file:
            return ""
        return _read_secret_file("github.private_key_file", self.github.private_key_file)

    def github_configured(self) -> bool:
        """Whether forgea-gh may call GitHub (commit statuses, provisioning, redelivery)."""
        return bool(self.github_token() or (self.github.app_id and self.github.private_key_file))

    def api_token(self) -> str:
        if self.api.token_file:
            return _read_secret_file("api.token_file", self.api.token_file).strip()
        return self.api.token.get_secret_value()


# "section.key" of every list setting: the environment gives these as JSON.
LIST_KEYS = frozenset(
    f"{section}.{key}"
    for section, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    for key, inner in field.annotation.model_fields.items()
    if typing.get_origin(inner.annotation) is list
)


def _read_secret_file(key: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read the settings, or raise ConfigError with a one-line message naming the key."""
    if path is None:
        path = os.environ.get(CONFIG_ENV_VAR) or None
    toml_path = Path(path) if path is not None else None
    if toml_path is not None and not toml_path.is_file():
        raise errors.ConfigError(f"config file not found: {toml_path}")

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if toml_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            return tuple(sources)

    try:
        loaded = _FromFile()
    except pydantic.ValidationError as exc:
        raise errors.ConfigError(describe_validation_error(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise errors.ConfigError(f"{toml_path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise errors.ConfigError(f"{toml_path}: not valid TOML: not UTF-8 text") from None
    except SettingsError as exc:
        # Raised for an environment value that is not JSON where a list is
        # expected; pydantic-settings names only the section.
        raise errors.ConfigError(describe_environment_error(exc)) from None
    return loaded


def describe_environment_error(exc: SettingsError) -> str:
    """Name the FORGEA_GH_* variable a list key could not be read from."""
    for name, value in sorted(os.environ.items()):
        section, _, key = name.upper().removeprefix(ENV_PREFIX).partition(ENV_DELIMITER)
        if not name.upper().startswith(ENV_PREFIX) or f"{section}.{key}".lower() not in LIST_KEYS:
            continue
        try:
            json.loads(value)
        except ValueError:
            return (
                f"invalid configuration: {section.lower()}.{key.lower()}: {name} must be a JSON "
                f'list, e.g. {name}=\'["first", "second"]\''
            )
    return f"invalid configuration from the environment ({ENV_PREFIX}*): {exc}"


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{key}: {message}")
    return "invalid configuration: " + "; ".join(parts)
