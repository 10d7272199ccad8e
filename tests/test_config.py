"""`load_settings`, `Settings` and `describe` against plain dicts: no process environment.

Each invalid value is checked against its whole message, so a reworded line is a
deliberate change here too; secrets are checked absent from every output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from blobflow.config import Settings, describe, load_settings
from blobflow.core.tokens import ApiToken
from blobflow.errors import ConfigError

RULE_PORT = "must be an integer from 0 to 65535"
NATS_SHAPE = "must be a nats://, tls://, ws:// or wss:// URL with a host"
DB_SHAPE = 'must be 1 to 63 characters without / \\ . space " $ or NUL'
TOKEN_SHAPE = "expected token=user_id or token=user_id:admin"
ONE_METHOD = "set only one NATS auth method (user and password, token, or creds)"


def problems(environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    return str(caught.value).splitlines()


@pytest.fixture
def creds_file(tmp_path: Path) -> Path:
    path = tmp_path / "user.creds"
    path.write_text("-----BEGIN NATS USER JWT-----\n")
    return path


# -- defaults and sources ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nats_url", "nats://127.0.0.1:4222"),
        ("nats_servers", ["nats://127.0.0.1:4222"]),
        ("nats_user", None),
        ("nats_password", None),
        ("nats_token", None),
        ("nats_creds", None),
        ("mongodb_url", "mongodb://127.0.0.1:27017"),
        ("mongodb_database", "blobflow"),
        ("definitions", Path(".")),
        ("http_host", "127.0.0.1"),
        ("http_port", 8080),
        ("api_tokens", ()),
        ("api_token", None),
        ("log_level", "info"),
        ("log_format", "json"),
        ("rate_limit", 50.0),
        ("rate_burst", 100),
        ("max_event_bytes", 1048576),
        ("lease_ms", 15000),
        ("max_concurrency", 16),
        ("ack_wait_s", 30.0),
        ("services", {}),
        ("service_limits", {}),
    ],
)
def test_defaults_with_an_empty_environ(name: str, expected: Any) -> None:
    assert getattr(load_settings({}), name) == expected


def test_every_field_is_covered_by_the_defaults_table() -> None:
    assert len(Settings.model_fields) == 22  # a new setting needs a default and a row above


def test_only_the_given_mapping_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BLOBFLOW_HTTP_PORT", "9000")
    monkeypatch.setenv("BLOBFLOW_SERVICE_STUDIO_URL", "http://studio:1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("BLOBFLOW_LOG_LEVEL=debug\n")
    settings = load_settings({})
    assert (settings.http_port, settings.log_level, settings.services) == (8080, "info", {})
    assert Settings().http_port == 8080  # the model itself reads no environment either
    assert load_settings().http_port == 9000  # default mapping: os.environ
    assert load_settings().services == {"STUDIO": "http://studio:1"}


def test_unknown_blobflow_variables_are_ignored() -> None:
    settings = load_settings({"BLOBFLOW_COLOUR": "blue", "BLOBFLOW_TEST_MONGODB_URL": "x"})
    assert settings == load_settings({})


@pytest.mark.parametrize("blank", ["", "   "])
@pytest.mark.parametrize(
    "var",
    [
        "BLOBFLOW_NATS_URL",
        "BLOBFLOW_NATS_USER",
        "BLOBFLOW_NATS_PASSWORD",
        "BLOBFLOW_NATS_TOKEN",
        "BLOBFLOW_NATS_CREDS",
        "BLOBFLOW_HTTP_PORT",
        "BLOBFLOW_API_TOKENS",
        "BLOBFLOW_API_TOKEN",
        "BLOBFLOW_LOG_LEVEL",
    ],
)
def test_an_empty_value_counts_as_unset(var: str, blank: str) -> None:
    assert load_settings({var: blank}) == load_settings({})


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(ValidationError):
        settings.http_port = 1  # type: ignore[misc]


# -- each variable, valid and invalid ------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "raw", "name", "expected"),
    [
        ("BLOBFLOW_MONGODB_URL", "mongodb+srv://cluster.example", "mongodb_url", None),
        ("BLOBFLOW_MONGODB_URL", "mongodb://a:1,b:2/db?replicaSet=rs", "mongodb_url", None),
        ("BLOBFLOW_MONGODB_DATABASE", "blob_flow-2", "mongodb_database", None),
        ("BLOBFLOW_MONGODB_DATABASE", "d" * 63, "mongodb_database", None),
        ("BLOBFLOW_DEFINITIONS", "/srv/defs", "definitions", Path("/srv/defs")),
        ("BLOBFLOW_HTTP_HOST", "0.0.0.0", "http_host", None),
        ("BLOBFLOW_HTTP_HOST", "::1", "http_host", None),
        ("BLOBFLOW_HTTP_HOST", "api.internal", "http_host", None),
        ("BLOBFLOW_HTTP_PORT", "0", "http_port", 0),
        ("BLOBFLOW_HTTP_PORT", " 65535 ", "http_port", 65535),
        ("BLOBFLOW_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("BLOBFLOW_LOG_LEVEL", "Warning", "log_level", "warning"),
        ("BLOBFLOW_LOG_LEVEL", "error", "log_level", "error"),
        ("BLOBFLOW_LOG_FORMAT", "TEXT", "log_format", "text"),
        ("BLOBFLOW_RATE_LIMIT", "0.5", "rate_limit", 0.5),
        ("BLOBFLOW_RATE_LIMIT", "200", "rate_limit", 200.0),
        ("BLOBFLOW_RATE_BURST", "1", "rate_burst", 1),
        ("BLOBFLOW_MAX_EVENT_BYTES", "1", "max_event_bytes", 1),
        ("BLOBFLOW_MAX_EVENT_BYTES", str(64 * 1024 * 1024), "max_event_bytes", 67108864),
        ("BLOBFLOW_LEASE_MS", "1000", "lease_ms", 1000),
        ("BLOBFLOW_MAX_CONCURRENCY", "1024", "max_concurrency", 1024),
        ("BLOBFLOW_ACK_WAIT_S", "1", "ack_wait_s", 1.0),
        ("BLOBFLOW_ACK_WAIT_S", "2.5", "ack_wait_s", 2.5),
    ],
)
def test_valid_values(var: str, raw: str, name: str, expected: Any) -> None:
    assert getattr(load_settings({var: raw}), name) == (raw if expected is None else expected)


@pytest.mark.parametrize(
    ("var", "raw", "message"),
    [
        ("BLOBFLOW_HTTP_PORT", "eighty", f"{RULE_PORT} (got 'eighty')"),
        ("BLOBFLOW_HTTP_PORT", "65536", f"{RULE_PORT} (got '65536')"),
        ("BLOBFLOW_HTTP_PORT", "-1", f"{RULE_PORT} (got '-1')"),
        ("BLOBFLOW_HTTP_PORT", "80.5", f"{RULE_PORT} (got '80.5')"),
        ("BLOBFLOW_HTTP_HOST", "a host", "must be a host name or IP address (got 'a host')"),
        ("BLOBFLOW_NATS_URL", "http://nats:4222", f"entry 1 {NATS_SHAPE} (got 'http://nats:4222')"),
        ("BLOBFLOW_NATS_URL", "localhost:4222", f"entry 1 {NATS_SHAPE} (got 'localhost:4222')"),
        ("BLOBFLOW_NATS_URL", "nats://", f"entry 1 {NATS_SHAPE} (got 'nats://')"),
        ("BLOBFLOW_NATS_URL", "nats://h:99999", f"entry 1 {NATS_SHAPE} (got 'nats://h:99999')"),
        ("BLOBFLOW_NATS_URL", "nats://a,,nats://b", "entry 2 is empty"),
        (
            "BLOBFLOW_NATS_CREDS",
            "/no/such/user.creds",
            "must name an existing credentials file (got '/no/such/user.creds')",
        ),
        (
            "BLOBFLOW_MONGODB_URL",
            "postgres://db:5432",
            "must start with mongodb:// or mongodb+srv:// (got 'postgres://db:5432')",
        ),
        (
            "BLOBFLOW_MONGODB_URL",
            "mongodb://",
            "must start with mongodb:// or mongodb+srv:// (got 'mongodb://')",
        ),
        ("BLOBFLOW_MONGODB_DATABASE", "a.b", f"{DB_SHAPE} (got 'a.b')"),
        ("BLOBFLOW_MONGODB_DATABASE", "a/b", f"{DB_SHAPE} (got 'a/b')"),
        ("BLOBFLOW_MONGODB_DATABASE", "a\\b", f"{DB_SHAPE} (got 'a\\\\b')"),
        ("BLOBFLOW_MONGODB_DATABASE", "a b", f"{DB_SHAPE} (got 'a b')"),
        ("BLOBFLOW_MONGODB_DATABASE", 'a"b', f"{DB_SHAPE} (got 'a\"b')"),
        ("BLOBFLOW_MONGODB_DATABASE", "a$b", f"{DB_SHAPE} (got 'a$b')"),
        ("BLOBFLOW_MONGODB_DATABASE", "a\0b", f"{DB_SHAPE} (got 'a\\x00b')"),
        ("BLOBFLOW_MONGODB_DATABASE", "d" * 64, f"{DB_SHAPE} (got '{'d' * 64}')"),
        (
            "BLOBFLOW_LOG_LEVEL",
            "Verbose",
            "must be one of debug, info, warning, error (got 'Verbose')",
        ),
        ("BLOBFLOW_LOG_LEVEL", "json", "must be one of debug, info, warning, error (got 'json')"),
        ("BLOBFLOW_LOG_FORMAT", "xml", "must be json or text (got 'xml')"),
        ("BLOBFLOW_RATE_LIMIT", "0", "must be a finite number greater than 0 (got '0')"),
        ("BLOBFLOW_RATE_LIMIT", "fast", "must be a finite number greater than 0 (got 'fast')"),
        ("BLOBFLOW_RATE_LIMIT", "inf", "must be a finite number greater than 0 (got 'inf')"),
        ("BLOBFLOW_RATE_LIMIT", "nan", "must be a finite number greater than 0 (got 'nan')"),
        ("BLOBFLOW_RATE_BURST", "0", "must be an integer of at least 1 (got '0')"),
        ("BLOBFLOW_RATE_BURST", "1.5", "must be an integer of at least 1 (got '1.5')"),
        ("BLOBFLOW_MAX_EVENT_BYTES", "0", "must be an integer from 1 to 67108864 (got '0')"),
        (
            "BLOBFLOW_MAX_EVENT_BYTES",
            "67108865",
            "must be an integer from 1 to 67108864 (got '67108865')",
        ),
        (
            "BLOBFLOW_LEASE_MS",
            "999",
            "must be an integer of at least 1000 (milliseconds) (got '999')",
        ),
        ("BLOBFLOW_MAX_CONCURRENCY", "0", "must be an integer from 1 to 1024 (got '0')"),
        ("BLOBFLOW_MAX_CONCURRENCY", "1025", "must be an integer from 1 to 1024 (got '1025')"),
        ("BLOBFLOW_ACK_WAIT_S", "0.5", "must be a number of seconds from 1 to 3600 (got '0.5')"),
        ("BLOBFLOW_ACK_WAIT_S", "inf", "must be a number of seconds from 1 to 3600 (got 'inf')"),
        ("BLOBFLOW_API_TOKENS", "abc", f"entry 1: {TOKEN_SHAPE}"),
    ],
)
def test_invalid_values(var: str, raw: str, message: str) -> None:
    assert problems({var: raw}) == [f"{var}: {message}"]


def test_a_directory_is_not_a_creds_file(tmp_path: Path) -> None:
    assert problems({"BLOBFLOW_NATS_CREDS": str(tmp_path)}) == [
        f"BLOBFLOW_NATS_CREDS: must name an existing credentials file (got '{tmp_path}')"
    ]


def test_every_problem_is_reported_one_per_line() -> None:
    assert problems(
        {
            "BLOBFLOW_HTTP_PORT": "eighty",
            "BLOBFLOW_LOG_FORMAT": "xml",
            "BLOBFLOW_NATS_URL": "nats://ok:4222, http://bad, ",
            "BLOBFLOW_API_TOKENS": "a=alice,b",
        }
    ) == [
        f"BLOBFLOW_NATS_URL: entry 2 {NATS_SHAPE} (got 'http://bad')",
        "BLOBFLOW_NATS_URL: entry 3 is empty",
        f"BLOBFLOW_HTTP_PORT: {RULE_PORT} (got 'eighty')",
        f"BLOBFLOW_API_TOKENS: entry 2: {TOKEN_SHAPE}",
        "BLOBFLOW_LOG_FORMAT: must be json or text (got 'xml')",
    ]


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="BLOBFLOW_RATE_BURST"):
        load_settings({"BLOBFLOW_RATE_BURST": "none"})


# -- NATS servers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "servers"),
    [
        ("nats://n1:4222", ["nats://n1:4222"]),
        (
            "nats://n1:4222, tls://n2:4443 ,ws://n3,wss://n4:443",
            ["nats://n1:4222", "tls://n2:4443", "ws://n3", "wss://n4:443"],
        ),
        ("nats://[::1]:4222", ["nats://[::1]:4222"]),
        ("nats://user:pw@n1:4222", ["nats://user:pw@n1:4222"]),
    ],
)
def test_nats_servers(raw: str, servers: list[str]) -> None:
    settings = load_settings({"BLOBFLOW_NATS_URL": raw})
    assert settings.nats_servers == servers
    assert settings.nats_url == ",".join(servers)


# -- API tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("t1=alice", [("t1", "alice", False)]),
        ("t1=alice:admin", [("t1", "alice", True)]),
        (
            " t1 = alice , t2=bob:admin,t3=carol ",
            [("t1", "alice", False), ("t2", "bob", True), ("t3", "carol", False)],
        ),
        ("dG9rZW4==alice", [("dG9rZW4=", "alice", False)]),  # base64 padding stays in the token
        ("t1=alice,t2=alice", [("t1", "alice", False), ("t2", "alice", False)]),
    ],
)
def test_api_tokens(raw: str, expected: list[tuple[str, str, bool]]) -> None:
    tokens = load_settings({"BLOBFLOW_API_TOKENS": raw}).api_tokens
    assert tokens == tuple(ApiToken(token, user, admin) for token, user, admin in expected)


@pytest.mark.parametrize(
    ("raw", "lines"),
    [
        ("abc", [f"entry 1: {TOKEN_SHAPE}"]),
        ("=user", ["entry 1: the token is empty"]),
        ("t=", ["entry 1: the user id is empty"]),
        ("t=:admin", ["entry 1: the user id is empty"]),
        ("t=u:root", ["entry 1: unknown role 'root' (only :admin is allowed)"]),
        ("t=u:", ["entry 1: unknown role '' (only :admin is allowed)"]),
        ("t1=a,t1=b", ["entry 2: the same token as entry 1"]),
        ("t1=a,,t2=b", ["entry 2 is empty"]),
        ("t1=a,", ["entry 2 is empty"]),
        (
            "abc,=user,t=,t=u:root,s=a,s=b:admin",
            [
                f"entry 1: {TOKEN_SHAPE}",
                "entry 2: the token is empty",
                "entry 3: the user id is empty",
                "entry 4: unknown role 'root' (only :admin is allowed)",
                "entry 6: the same token as entry 5",
            ],
        ),
    ],
)
def test_bad_api_tokens(raw: str, lines: list[str]) -> None:
    assert problems({"BLOBFLOW_API_TOKENS": raw}) == [
        f"BLOBFLOW_API_TOKENS: {line}" for line in lines
    ]


def test_api_token_repr_hides_the_token() -> None:
    token = ApiToken("s3cr3t-token", "alice", admin=True)
    assert "s3cr3t-token" not in repr(token)
    assert repr(token) == "ApiToken(user_id='alice', admin=True)"


# -- NATS auth ------------------------------------------------------------------------------

USER, PASSWORD, TOKEN, CREDS = (
    "BLOBFLOW_NATS_USER",
    "BLOBFLOW_NATS_PASSWORD",
    "BLOBFLOW_NATS_TOKEN",
    "BLOBFLOW_NATS_CREDS",
)


@pytest.mark.parametrize(
    ("present", "lines"),
    [
        ((), []),
        ((USER, PASSWORD), []),
        ((TOKEN,), []),
        ((CREDS,), []),
        ((USER,), [f"{USER}: needs {PASSWORD} as well"]),
        ((PASSWORD,), [f"{PASSWORD}: needs {USER} as well"]),
        ((USER, PASSWORD, TOKEN), [f"{USER}, {TOKEN}: {ONE_METHOD}"]),
        ((USER, CREDS), [f"{USER}, {CREDS}: {ONE_METHOD}"]),
        ((PASSWORD, TOKEN), [f"{USER}, {TOKEN}: {ONE_METHOD}"]),
        ((TOKEN, CREDS), [f"{TOKEN}, {CREDS}: {ONE_METHOD}"]),
        ((USER, PASSWORD, TOKEN, CREDS), [f"{USER}, {TOKEN}, {CREDS}: {ONE_METHOD}"]),
    ],
)
def test_nats_auth_methods(present: tuple[str, ...], lines: list[str], creds_file: Path) -> None:
    values = {USER: "blobflow", PASSWORD: "pw-1", TOKEN: "tok-1", CREDS: str(creds_file)}
    environ = {var: values[var] for var in present}
    if lines:
        assert problems(environ) == lines
    else:
        load_settings(environ)


def test_an_auth_conflict_is_reported_along_with_field_problems() -> None:
    assert problems({TOKEN: "tok-1", CREDS: "/no/such.creds", "BLOBFLOW_HTTP_PORT": "x"}) == [
        "BLOBFLOW_NATS_CREDS: must name an existing credentials file (got '/no/such.creds')",
        f"BLOBFLOW_HTTP_PORT: {RULE_PORT} (got 'x')",
        f"{TOKEN}, {CREDS}: {ONE_METHOD}",
    ]


def test_nats_auth_values(creds_file: Path) -> None:
    settings = load_settings({USER: "blobflow", PASSWORD: "pw-1"})
    assert settings.nats_user == "blobflow"
    assert settings.nats_password is not None
    assert settings.nats_password.get_secret_value() == "pw-1"
    assert load_settings({CREDS: str(creds_file)}).nats_creds == creds_file


# -- services -------------------------------------------------------------------------------


def test_services_are_picked_up() -> None:
    settings = load_settings(
        {
            "BLOBFLOW_SERVICE_STUDIO_URL": "http://studio:8000/api",
            "BLOBFLOW_SERVICE_IMAGE_GEN_URL": "https://images.example",
        }
    )
    assert settings.services == {
        "STUDIO": "http://studio:8000/api",
        "IMAGE_GEN": "https://images.example",
    }


def test_a_bad_service_url_is_reported_with_the_other_problems() -> None:
    assert problems(
        {
            "BLOBFLOW_SERVICE_STUDIO_URL": "ftp://studio",
            "BLOBFLOW_HTTP_PORT": "eighty",
            USER: "blobflow",
        }
    ) == [
        f"BLOBFLOW_HTTP_PORT: {RULE_PORT} (got 'eighty')",
        f"{USER}: needs {PASSWORD} as well",
        "BLOBFLOW_SERVICE_STUDIO_URL: must be an absolute http:// or https:// URL, not 'ftp://studio'",
    ]


def test_a_bad_service_url_alone_is_an_error() -> None:
    assert problems({"BLOBFLOW_SERVICE_STUDIO_URL": "studio"}) == [
        "BLOBFLOW_SERVICE_STUDIO_URL: must be an absolute http:// or https:// URL, not 'studio'"
    ]


# -- secrets --------------------------------------------------------------------------------

SECRETS = (
    *("pw-hunter2", "tok-nats-7", "api-tok-9", "mongo-pw-3", "nats-url-pw-5", "svc-pw-1"),
    "cli-tok-11",
)
SECRET_ENV = {
    PASSWORD: "pw-hunter2",
    USER: "blobflow",
    "BLOBFLOW_API_TOKENS": "api-tok-9=alice:admin,other-token=bob",
    "BLOBFLOW_API_TOKEN": "cli-tok-11",
    "BLOBFLOW_MONGODB_URL": "mongodb://app:mongo-pw-3@db:27017/blobflow",
    "BLOBFLOW_NATS_URL": "nats://nats-a:4222,tls://blobflow:nats-url-pw-5@nats-b:4443",
    "BLOBFLOW_SERVICE_STUDIO_URL": "https://svc:svc-pw-1@studio.example",
}


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in (*SECRETS, "other-token") if secret in text]
    assert not leaked, text


def test_secrets_never_appear_in_str_repr_or_describe() -> None:
    settings = load_settings(SECRET_ENV)
    described = describe(settings)
    for text in (str(settings), repr(settings), json.dumps(described)):
        assert_no_secret(text)
    assert described["nats_password"] == "***"
    assert described["mongodb_url"] == "mongodb://***@db:27017/blobflow"
    assert described["nats_url"] == "nats://nats-a:4222,tls://***@nats-b:4443"
    assert described["services"] == {"STUDIO": "https://***@studio.example"}
    assert described["api_tokens"] == {"count": 2, "user_ids": ["alice", "bob"]}
    assert described["api_token"] == "***"
    assert settings.api_token is not None
    assert settings.api_token.get_secret_value() == "cli-tok-11"  # as given: sent as it is
    token_settings = load_settings(
        {TOKEN: "tok-nats-7", "BLOBFLOW_NATS_URL": "nats://tok-nats-7@n"}
    )
    for text in (str(token_settings), repr(token_settings), json.dumps(describe(token_settings))):
        assert_no_secret(text)


@pytest.mark.parametrize(
    "environ",
    [
        {**SECRET_ENV, "BLOBFLOW_HTTP_PORT": "x", TOKEN: "tok-nats-7"},
        {PASSWORD: "pw-hunter2", TOKEN: "tok-nats-7"},
        {"BLOBFLOW_API_TOKENS": "api-tok-9"},
        {"BLOBFLOW_API_TOKENS": "api-tok-9=alice:root,api-tok-9=bob,other-token="},
        {"BLOBFLOW_MONGODB_URL": "postgres://app:mongo-pw-3@db"},
        {"BLOBFLOW_NATS_URL": "http://blobflow:nats-url-pw-5@nats, nats://tok-nats-7@"},
        {"BLOBFLOW_SERVICE_STUDIO_URL": "ftp://svc:svc-pw-1@studio", PASSWORD: "pw-hunter2"},
    ],
)
def test_secrets_never_appear_in_error_messages(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    assert_no_secret(str(caught.value))
    assert caught.value.__suppress_context__  # the pydantic error, raw input and all, stays out


# -- describe -------------------------------------------------------------------------------


def test_describe_lists_every_setting_as_json() -> None:
    described = describe(load_settings({}))
    assert list(described) == list(Settings.model_fields)
    assert json.loads(json.dumps(described)) == described
    assert described["api_tokens"] == {"count": 0, "user_ids": []}
    assert described["nats_password"] is None
    assert described["api_token"] is None
    assert described["definitions"] == "."
    assert (described["lease_ms"], described["max_concurrency"]) == (15000, 16)
