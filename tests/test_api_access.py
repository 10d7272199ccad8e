"""Who may call what, how fast, and the one error shape, over HTTP against the service."""

from __future__ import annotations

import pytest

from blobflow.core.tokens import ANONYMOUS, Principal, TokenTable, bearer_token, parse_api_tokens
from tests.api_support import ADMIN, ALICE, TOKENS, Api, Servers

V1_ROUTES = [
    ("GET", "/v1/executions"),
    ("GET", "/v1/executions/x"),
    ("GET", "/v1/executions/x/logs"),
    ("GET", "/v1/executions/x/logs/download"),
    ("POST", "/v1/executions/x/cancel"),
    ("POST", "/v1/workflows/x/execute"),
    ("GET", "/v1/workflows"),
    ("GET", "/v1/workflows/x"),
    ("GET", "/v1/providers"),
    ("GET", "/v1/providers/x"),
    ("GET", "/v1/schemas"),
    ("GET", "/v1/schemas/x"),
    ("POST", "/v1/registry"),
    ("GET", "/v1/blobs/x/deltas"),
]


AUTHORIZATIONS = [None, "Bearer wrong-token", "Basic YWxpY2U6cHc=", "Bearer ", ADMIN]


@pytest.mark.asyncio
async def test_every_v1_route_needs_a_valid_bearer_token(
    api: Api, subtests: pytest.Subtests
) -> None:
    # One service for the whole matrix: subtests report each case on its own.
    for method, path in V1_ROUTES:
        for authorization in AUTHORIZATIONS:
            with subtests.test(method=method, path=path, authorization=authorization):
                headers = {} if authorization is None else {"Authorization": authorization}
                reply = await api.call(method, path, token=None, headers=headers)
                assert reply.status == 401
                assert reply.body["error"]["code"] == "unauthorized"
                assert reply.headers["WWW-Authenticate"] == 'Bearer realm="blobflow"'


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
@pytest.mark.asyncio
async def test_probes_metrics_and_the_document_need_no_token(api: Api, path: str) -> None:
    reply = await api.get(path, token=None)
    assert reply.status == 200


@pytest.mark.asyncio
async def test_the_scheme_is_case_insensitive(api: Api) -> None:
    reply = await api.get(
        "/v1/executions", token=None, headers={"Authorization": f"bearer {ADMIN}"}
    )
    assert reply.status == 200


@pytest.mark.parametrize(("token", "status"), [(ALICE, 403), (ADMIN, 200)])
@pytest.mark.asyncio
async def test_registering_needs_admin(api: Api, token: str, status: int) -> None:
    reply = await api.post("/v1/registry", token=token, json={})
    assert reply.status == status
    if status == 403:
        assert reply.body["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/nothing", 404, "not_found"),
        ("DELETE", "/v1/executions", 405, "method_not_allowed"),
        ("GET", "/v1/executions/x/cancel", 405, "method_not_allowed"),
    ],
)
@pytest.mark.asyncio
async def test_router_errors_have_the_error_shape(
    api: Api, method: str, path: str, status: int, code: str
) -> None:
    reply = await api.call(method, path)
    assert reply.status == status
    assert reply.body["error"]["code"] == code
    assert reply.body["error"]["message"]


@pytest.mark.asyncio
async def test_an_oversized_body_is_413(api: Api) -> None:
    reply = await api.post(
        "/v1/registry",
        data=b" " * (9 * 1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status == 413
    assert reply.body["error"]["code"] == "payload_too_large"


@pytest.mark.asyncio
async def test_without_tokens_the_api_is_open(
    servers: Servers,
) -> None:
    async with servers.serve(api_tokens="") as api:
        assert (await api.get("/v1/executions", token=None)).status == 200
        assert (await api.post("/v1/registry", token=None, json={})).status == 200


@pytest.mark.asyncio
async def test_each_client_has_its_own_bucket_and_429_says_when_to_retry(
    servers: Servers,
) -> None:
    async with servers.serve(
        rate_limit="0.5",
        rate_burst="3",
    ) as api:
        replies = [await api.get("/v1/workflows", token=ALICE) for _ in range(4)]
        assert [r.status for r in replies] == [200, 200, 200, 429]
        assert [r.headers["RateLimit-Remaining"] for r in replies] == ["2", "1", "0", "0"]
        assert {r.headers["RateLimit-Limit"] for r in replies} == {"3"}
        limited = replies[-1]
        assert limited.body["error"]["code"] == "rate_limited"
        assert limited.headers["Retry-After"] == "2"
        # Another token is another client; probes and metrics are never limited.
        assert (await api.get("/v1/workflows", token=ADMIN)).status == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await api.get(path, token=ALICE)).status == 200
        # Without a valid token the client is its address: guessing is limited too.
        guesses = [await api.get("/v1/workflows", token="guess") for _ in range(4)]
        assert [r.status for r in guesses] == [401, 401, 401, 429]


# -- who a token names: the one implementation HTTP and NATS share -----------------------

TABLE = TokenTable(parse_api_tokens(TOKENS))


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (f"Bearer {ADMIN}", Principal("root", admin=True)),
        (f"bearer  {ALICE} ", Principal("alice", admin=False)),
        (f"BEARER {ALICE}", Principal("alice", admin=False)),
        (None, None),
        ("", None),
        ("Bearer ", None),
        (ADMIN, None),
        (f"Basic {ADMIN}", None),
        ("Bearer wrong-token", None),
        (f"Bearer {ADMIN}x", None),
    ],
)
def test_a_token_table_names_the_caller_or_nobody(
    authorization: str | None, expected: Principal | None
) -> None:
    assert TABLE.principal(authorization) == expected
    entry, key = TABLE.identify(authorization)
    assert (entry is None) == (expected is None) == (key is None)
    if key is not None:
        assert len(key) == 24
        assert ADMIN not in key
        assert ALICE not in key


def test_without_tokens_everyone_is_anonymous_and_admin() -> None:
    table = TokenTable(())
    assert not table.enabled
    assert table.principal(None) == ANONYMOUS
    assert table.principal("Bearer anything") == ANONYMOUS
    assert ANONYMOUS.admin
    assert ANONYMOUS.sees("alice")


def test_a_user_sees_only_its_own() -> None:
    alice = TABLE.principal(f"Bearer {ALICE}")
    assert alice is not None
    assert alice.sees("alice")
    assert not alice.sees("bob")


@pytest.mark.parametrize(
    ("authorization", "token"),
    [("Bearer abc", "abc"), ("bearer   abc  ", "abc"), ("Basic abc", None), (None, None)],
)
def test_bearer_token_reads_the_header(authorization: str | None, token: str | None) -> None:
    assert bearer_token(authorization) == token
