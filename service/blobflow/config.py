"""Configuration from `BLOBFLOW_*` environment variables (CONTRACT.md §1).

`load_settings` is the one entry point: it reads only the mapping it is given (never
`.env` files or a secrets folder, so tests are hermetic) and raises a `ConfigError`
listing every problem, one line each, naming the variable. Messages, `repr` and
`describe` never show passwords, tokens or URL credentials: they end up in logs.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, FilePath, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from blobflow.core.tokens import ApiToken, parse_api_tokens
from blobflow.downstream.http_caller import service_urls_from_env
from blobflow.downstream.limits import ServiceLimits, limits_from_env
from blobflow.errors import ConfigError

ENV_PREFIX: Final = "BLOBFLOW_"
MASK: Final = "***"
MAX_EVENT_BYTES_LIMIT: Final = 64 * 1024 * 1024

_CHOICES: Final = frozenset({"debug", "info", "warning", "error", "json", "text"})
_NATS_SCHEMES: Final = ("nats", "tls", "ws", "wss")
# The whole userinfo goes: a NATS token may stand where a user name would.
_USERINFO: Final = re.compile(r"(?<=//)[^/?#]*@")
# Fields whose raw value is never quoted back (`api_tokens` names entries by position).
_SECRET_FIELDS: Final = frozenset({"nats_password", "nats_token", "api_tokens", "api_token"})
# Messages for pydantic's own checks (types, bounds, choices), which name no variable.
_RULES: Final = {
    "nats_creds": "must name an existing credentials file",
    "mongodb_url": "must start with mongodb:// or mongodb+srv://",
    "mongodb_database": 'must be 1 to 63 characters without / \\ . space " $ or NUL',
    "http_host": "must be a host name or IP address",
    "http_port": "must be an integer from 0 to 65535",
    "log_level": "must be one of debug, info, warning, error",
    "log_format": "must be json or text",
    "rate_limit": "must be a finite number greater than 0",
    "rate_burst": "must be an integer of at least 1",
    "max_event_bytes": f"must be an integer from 1 to {MAX_EVENT_BYTES_LIMIT}",
    "lease_ms": "must be an integer of at least 1000 (milliseconds)",
    "max_concurrency": "must be an integer from 1 to 1024",
    "ack_wait_s": "must be a number of seconds from 1 to 3600",
}


def env_var(field_name: str) -> str:
    """`http_port` -> `BLOBFLOW_HTTP_PORT`."""
    return ENV_PREFIX + field_name.upper()


def mask_url(url: str) -> str:
    """`mongodb://u:pw@h/db` -> `mongodb://***@h/db`."""
    return _USERINFO.sub(MASK + "@", url)


def _shown(value: object) -> str:
    return repr(mask_url(value)) if isinstance(value, str) else repr(value)


def _masked(name: str, value: Any) -> Any:
    if name in ("nats_url", "mongodb_url"):
        return mask_url(value)
    if name == "services":
        return {key: mask_url(url) for key, url in value.items()}
    return value


def nats_auth_problem(values: Mapping[str, object]) -> str | None:
    """What is wrong with the NATS auth settings given (None = unset), if anything."""
    user, password, token, creds = (
        values.get(f"nats_{key}") is not None for key in ("user", "password", "token", "creds")
    )
    groups = (("NATS_USER", user or password), ("NATS_TOKEN", token), ("NATS_CREDS", creds))
    methods = [name for name, present in groups if present]
    if len(methods) > 1:
        names = ", ".join(ENV_PREFIX + name for name in methods)
        return f"{names}: set only one NATS auth method (user and password, token, or creds)"
    if user != password:
        have, need = ("NATS_USER", "NATS_PASSWORD") if user else ("NATS_PASSWORD", "NATS_USER")
        return f"{ENV_PREFIX}{have}: needs {ENV_PREFIX}{need} as well"
    return None


class Settings(BaseSettings):
    """Validated settings. Build them with `load_settings`; keyword arguments work in tests."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, hide_input_in_errors=True)

    nats_url: str = Field("nats://127.0.0.1:4222", description="NATS server(s), comma separated")
    nats_user: str | None = Field(None, description="NATS user; needs nats_password")
    nats_password: SecretStr | None = Field(None, description="NATS password")
    nats_token: SecretStr | None = Field(None, description="NATS token")
    nats_creds: FilePath | None = Field(None, description="NATS credentials file")
    mongodb_url: str = Field(
        "mongodb://127.0.0.1:27017", pattern=r"^mongodb(\+srv)?://.", description="MongoDB URL"
    )
    mongodb_database: str = Field("blobflow", pattern=r'^[^/\\. "$\x00]{1,63}$')
    definitions: Path = Field(Path("."), description="folder with schemas/, workflows/, providers/")
    http_host: str = Field("127.0.0.1", pattern=r"^[A-Za-z0-9._:%\[\]-]+$")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP API port; 0 = any free port")
    api_tokens: tuple[ApiToken, ...] = Field((), description="token=user_id[:admin],...")
    api_token: SecretStr | None = Field(
        None, description="BLOBFLOW_API_TOKEN: the token commands send (register: an admin's)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    rate_limit: float = Field(50, gt=0, allow_inf_nan=False, description="requests/s per client")
    rate_burst: int = Field(100, ge=1, description="API request burst per client")
    max_event_bytes: int = Field(
        1048576, ge=1, le=MAX_EVENT_BYTES_LIMIT, description="larger blob events are dead-lettered"
    )
    lease_ms: int = Field(
        15000, ge=1000, description="BLOBFLOW_LEASE_MS: execution lease a replica renews, in ms"
    )
    max_concurrency: int = Field(
        16, ge=1, le=1024, description="BLOBFLOW_MAX_CONCURRENCY: executions run at once"
    )
    ack_wait_s: float = Field(
        30,
        ge=1,
        le=3600,
        allow_inf_nan=False,
        description="BLOBFLOW_ACK_WAIT_S: how long an event may stay unacknowledged",
    )
    services: dict[str, str] = Field(default_factory=dict, description="BLOBFLOW_SERVICE_*_URL")
    service_limits: dict[str, ServiceLimits] = Field(
        default_factory=dict, description="BLOBFLOW_SERVICE_*_MAX_CONCURRENCY and _RATE_LIMIT"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only keyword arguments: load_settings reads the environment mapping it is given,
        # so neither os.environ nor files leak into a test or a second configuration.
        return (init_settings,)

    @property
    def nats_servers(self) -> list[str]:
        return self.nats_url.split(",")

    @field_validator(
        "nats_user", "nats_password", "nats_token", "nats_creds", "api_token", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        # Only a known choice is lowered, so an error quotes the value as it was given.
        lowered = value.strip().lower() if isinstance(value, str) else value
        return lowered if lowered in _CHOICES else value

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _parse_tokens(cls, value: object) -> object:
        return parse_api_tokens(value) if isinstance(value, str) else value

    @field_validator("nats_url")
    @classmethod
    def _check_nats_url(cls, value: str) -> str:
        servers, problems = [s.strip() for s in value.split(",")], []
        for number, server in enumerate(servers, start=1):
            try:
                parts = urlsplit(server)
                ok = parts.scheme in _NATS_SCHEMES and bool(parts.hostname)
                _ = parts.port  # raises ValueError for a port that is not a number in range
            except ValueError:
                ok = False
            if not server:
                problems.append(f"entry {number} is empty")
            elif not ok:
                problems.append(
                    f"entry {number} must be a nats://, tls://, ws:// or wss:// URL with a host"
                    f" (got {_shown(server)})"
                )
        if problems:
            raise ValueError("\n".join(problems))
        return ",".join(servers)

    @model_validator(mode="after")
    def _check_auth(self) -> Settings:
        problem = nats_auth_problem(dict(self))
        if problem is not None:
            raise ValueError(problem)
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # SecretStr masks itself; URLs may carry a password and ApiToken hides its token.
        return ((name, _masked(name or "", value)) for name, value in super().__repr_args__())


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `environ` (default os.environ); ConfigError naming every problem."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = env.get(env_var(name), "").strip()
        # Empty counts as unset: the default applies. Services have variables of their own.
        if raw and name not in ("services", "service_limits"):
            values[name] = raw
    problems: list[str] = []
    service_problems: list[str] = []
    try:
        values["services"] = service_urls_from_env(env)
    except ConfigError as exc:
        service_problems.extend(str(exc).splitlines())
    try:
        values["service_limits"] = limits_from_env(env, values.get("services", {}))
    except ConfigError as exc:
        service_problems.extend(str(exc).splitlines())
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        problems.extend(_problem_lines(exc))
        # The model's cross-field check runs only once every field is valid: repeat it here
        # (dict.fromkeys below drops the copy when the model did report it).
        auth = nats_auth_problem(values)
        if auth is not None:
            problems.append(auth)
    else:
        if not service_problems:
            return settings
    problems.extend(service_problems)
    # from None: the pydantic error's context would show the raw input, secrets included.
    raise ConfigError("\n".join(dict.fromkeys(problems))) from None


def _problem_lines(exc: ValidationError) -> Iterator[str]:
    for error in exc.errors():
        lines = str(error["ctx"]["error"]).splitlines() if error["type"] == "value_error" else []
        if not error["loc"]:  # model-level checks name their variables themselves
            yield from lines
            continue
        name = str(error["loc"][0])
        if lines:  # our own validators: one line per problem, the variable in front
            yield from (f"{env_var(name)}: {line}" for line in lines)
        else:
            got = "" if name in _SECRET_FIELDS else f" (got {_shown(error['input'])})"
            yield f"{env_var(name)}: {_RULES.get(name, error['msg'])}{got}"


def describe(settings: Settings) -> dict[str, Any]:
    """Every setting for a start-up log line, with secrets masked and tokens counted."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = _masked(name, getattr(settings, name))
        if isinstance(value, SecretStr):
            value = MASK
        elif name == "api_tokens":
            value = {"count": len(value), "user_ids": [token.user_id for token in value]}
        elif isinstance(value, Path):
            value = str(value)
        elif name == "service_limits":
            value = {service: dataclasses.asdict(limits) for service, limits in value.items()}
        out[name] = value
    return out
