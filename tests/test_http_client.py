"""ServiceClients against real aiohttp servers on loopback: no mocks.

The scripted `downstream` fixture answers; a second `Downstream` plays "another origin"
for the redirect tests and must never see a request.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from blobflow import __version__
from blobflow.core.step_requests import StepRequest
from blobflow.downstream.http_caller import (
    ServiceClients,
    service_env_var,
    service_urls_from_env,
)
from blobflow.errors import ConfigError, HttpCallError
from tests.servers import Downstream
from tests.servers.downstream import Reply, redirect_to
from tests.servers.ports import LOOPBACK, free_port

KEY = "exec-1:step-a"


def step(
    method: str = "GET",
    path: str = "/blobs/1",
    *,
    query: tuple[tuple[str, str], ...] = (),
    json_body: Any = None,
    headers: Mapping[str, str] | None = None,
) -> StepRequest:
    return StepRequest(
        method, path, query, json_body, {"Idempotency-Key": KEY} if headers is None else headers
    )


@pytest_asyncio.fixture
async def clients(downstream: Downstream) -> AsyncIterator[ServiceClients]:
    async with ServiceClients({"STUDIO": downstream.url}, max_body_bytes=1024) as opened:
        yield opened


async def call_error(clients: ServiceClients, request: StepRequest, timeout_s: float = 5) -> Any:
    with pytest.raises(HttpCallError) as caught:
        await clients.call("studio", request, timeout_s)
    return caught.value


# -- configuration ----------------------------------------------------------------------


def test_service_env_var_normalizes_names() -> None:
    assert service_env_var("studio") == "BLOBFLOW_SERVICE_STUDIO_URL"
    assert service_env_var("my-svc") == "BLOBFLOW_SERVICE_MY_SVC_URL"
    assert service_env_var("a.b c2") == "BLOBFLOW_SERVICE_A_B_C2_URL"


def test_service_urls_from_env_reads_only_service_variables() -> None:
    env = {
        "BLOBFLOW_SERVICE_STUDIO_URL": "http://127.0.0.1:9000",
        "BLOBFLOW_SERVICE_MY_SVC_URL": "https://svc.example/api/",
        "BLOBFLOW_NATS_URL": "nats://x",
        "PATH": "/bin",
    }
    assert service_urls_from_env(env) == {
        "STUDIO": "http://127.0.0.1:9000",
        "MY_SVC": "https://svc.example/api/",
    }


@pytest.mark.parametrize(
    "value",
    ["", "127.0.0.1:9000", "/api", "ftp://h/x", "http://", "http://h:99999", "http://h/?k=v"],
)
def test_service_urls_from_env_rejects_bad_urls(value: str) -> None:
    env = {"BLOBFLOW_SERVICE_OK_URL": "http://h", "BLOBFLOW_SERVICE_BAD_URL": value}
    with pytest.raises(ConfigError, match=r"^BLOBFLOW_SERVICE_BAD_URL: "):
        service_urls_from_env(env)


def test_service_urls_from_env_hides_credentials_and_lists_every_problem() -> None:
    env = {"BLOBFLOW_SERVICE_A_URL": "ftp://u:secret@h", "BLOBFLOW_SERVICE_B_URL": "nope"}
    with pytest.raises(ConfigError) as caught:
        service_urls_from_env(env)
    lines = str(caught.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "BLOBFLOW_SERVICE_A_URL",
        "BLOBFLOW_SERVICE_B_URL",
    ]
    assert "secret" not in str(caught.value)


def test_clients_refuse_bad_base_urls_and_know_normalized_names() -> None:
    with pytest.raises(ConfigError, match="service X"):
        ServiceClients({"X": "file:///etc/passwd"})
    clients = ServiceClients({"MY_SVC": "http://h"})
    assert clients.knows("my-svc")
    assert clients.knows("MY_SVC")
    assert not clients.knows("other")


# -- requests -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_json_with_query_and_headers(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("GET", "/blobs/{id}", Reply(200, json={"ok": True}))
    response = await clients.call("studio", step(query=(("q", "a b&c"), ("n", "1"))), timeout_s=5)
    assert (response.status, response.body) == (200, {"ok": True})
    assert response.headers["content-type"] == "application/json"
    [seen] = downstream.requests
    assert (seen.method, seen.path, seen.query) == ("GET", "/blobs/1", {"q": "a b&c", "n": "1"})
    assert seen.headers["Idempotency-Key"] == KEY
    assert seen.headers["Accept"] == "application/json"
    assert seen.headers["User-Agent"] == f"blobflow/{__version__}"
    assert seen.body == b""


@pytest.mark.asyncio
async def test_post_sends_json_body(clients: ServiceClients, downstream: Downstream) -> None:
    downstream.script("POST", "/blobs/validate", Reply(201, json={"id": 7}))
    body = {"text": "Grüße", "n": 2**70, "items": [1, None]}
    response = await clients.call("studio", step("POST", "/blobs/validate", json_body=body), 5)
    assert (response.status, response.body) == (201, {"id": 7})
    [seen] = downstream.requests
    assert seen.json == body  # 2**70 kept exact: beyond orjson's 64 bits
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Idempotency-Key"] == KEY


@pytest.mark.asyncio
async def test_base_url_path_prefix_and_encoded_segment(downstream: Downstream) -> None:
    downstream.script("GET", "/api/blobs/{id}", Reply(200, json={}))
    async with ServiceClients({"STUDIO": f"{downstream.url}/api/"}) as clients:
        await clients.call("studio", step(path="/blobs/a%2Fb%20c%25"), 5)
        await clients.call("studio", step(path="/blobs/raw space/é"), 5)
    first, second = downstream.requests
    # One segment, exactly as encoded: neither decoded to `a/b` nor doubled to `%252F`.
    assert first.path == "/api/blobs/a%2Fb%20c%25"
    assert first.path_params == {"id": "a/b c%"}
    # Characters that cannot appear raw are encoded, never sent as they are.
    assert second.path == "/api/blobs/raw%20space/%C3%A9"


@pytest.mark.asyncio
async def test_request_headers_cannot_change_host(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("GET", "/blobs/1", Reply(200, json={}))
    await clients.call("studio", step(headers={"Host": "169.254.169.254", "X-Trace": "t"}), 5)
    [seen] = downstream.requests
    assert seen.headers["Host"] == f"{LOOPBACK}:{downstream.port}"
    assert seen.headers["X-Trace"] == "t"


# -- answers ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("reply", [Reply(204), Reply(200, body=b"")])
async def test_empty_2xx_body_is_none(
    clients: ServiceClients, downstream: Downstream, reply: Reply
) -> None:
    downstream.script("DELETE", "/blobs/1", reply)
    response = await clients.call("studio", step("DELETE"), 5)
    assert (response.status, response.body) == (reply.status, None)


@pytest.mark.asyncio
async def test_error_statuses_are_returned_with_their_body(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("GET", "/json", Reply(422, json={"error": "bad"}))
    downstream.script("GET", "/text", Reply(503, body="x" * 1000, headers={"Retry-After": "2"}))
    downstream.script("GET", "/huge", Reply(500, body="y" * 5000))
    unprocessable = await clients.call("studio", step(path="/json"), 5)
    assert (unprocessable.status, unprocessable.body) == (422, {"error": "bad"})
    unavailable = await clients.call("studio", step(path="/text"), 5)
    assert (unavailable.status, unavailable.body) == (503, "x" * 1000)
    assert unavailable.headers["retry-after"] == "2"
    huge = await clients.call("studio", step(path="/huge"), 5)  # past max_body_bytes
    assert huge.status == 500
    assert "larger than 1024 bytes" in huge.body


@pytest.mark.asyncio
async def test_error_text_is_truncated(downstream: Downstream) -> None:
    downstream.script("GET", "/blobs/1", Reply(500, body="z" * 5000))
    async with ServiceClients({"STUDIO": downstream.url}) as clients:
        response = await clients.call("studio", step(), 5)
    assert response.body == "z" * 2000


@pytest.mark.asyncio
async def test_non_json_2xx_is_not_json(clients: ServiceClients, downstream: Downstream) -> None:
    downstream.script("GET", "/blobs/1", Reply(200, body="<html>hi</html>"))
    error = await call_error(clients, step())
    assert (error.reason, error.retryable) == ("not_json", False)
    assert "<html>hi</html>" in str(error)
    assert "Content-Type" in str(error)


@pytest.mark.asyncio
async def test_declared_length_over_the_limit_is_too_large(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("GET", "/blobs/1", Reply(200, json=["x" * 2000]))
    error = await call_error(clients, step())
    assert (error.reason, error.retryable) == ("too_large", False)


@pytest.mark.asyncio
async def test_endless_body_stops_at_the_limit(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("GET", "/blobs/1", Reply(200, endless=True))
    error = await call_error(clients, step())
    assert error.reason == "too_large"
    # We hung up instead of draining: the server's endless write loop ended.
    assert await downstream.requests[0].finished() == "client_gone"


@pytest.mark.asyncio
async def test_limit_counts_decompressed_bytes(
    clients: ServiceClients, downstream: Downstream
) -> None:
    bomb = gzip.compress(b"[" + b"0," * 100_000 + b"0]")
    assert len(bomb) < 1024  # the declared length passes; what it expands to must not
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    downstream.script("GET", "/blobs/1", Reply(200, body=bomb, headers=headers))
    error = await call_error(clients, step())
    assert error.reason == "too_large"


# -- failures -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_slow_answer_times_out(clients: ServiceClients, downstream: Downstream) -> None:
    downstream.script("GET", "/blobs/1", Reply(200, json={}, delay_s=3))
    started = time.monotonic()
    error = await call_error(clients, step(), timeout_s=0.3)
    assert (error.reason, error.retryable) == ("timeout", True)
    assert time.monotonic() - started < 1.5
    assert await downstream.requests[0].finished() == "client_gone"


@pytest.mark.asyncio
async def test_cancelling_the_task_abandons_the_request(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("POST", "/blobs/1", Reply(hang=True))
    task = asyncio.create_task(clients.call("studio", step("POST", json_body={}), 30))
    [seen] = await downstream.wait_for_calls("POST", "/blobs/1")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await seen.finished() == "client_gone"


@pytest.mark.asyncio
async def test_refused_connection_is_retryable() -> None:
    async with ServiceClients({"STUDIO": f"http://{LOOPBACK}:{free_port()}"}) as clients:
        error = await call_error(clients, step())
    assert (error.reason, error.retryable) == ("connect", True)


@pytest.mark.asyncio
async def test_lost_response_is_retryable(clients: ServiceClients, downstream: Downstream) -> None:
    downstream.script("POST", "/blobs/1", Reply(disconnect=True))
    error = await call_error(clients, step("POST", json_body={}))
    assert (error.reason, error.retryable) == ("connect", True)


@pytest.mark.asyncio
async def test_unknown_service_names_the_variable(
    clients: ServiceClients, downstream: Downstream
) -> None:
    with pytest.raises(HttpCallError) as caught:
        await clients.call("my-svc", step(), 5)
    assert (caught.value.reason, caught.value.retryable) == ("unknown_service", False)
    assert "BLOBFLOW_SERVICE_MY_SVC_URL" in str(caught.value)
    assert downstream.requests == []


@pytest.mark.asyncio
async def test_one_deadline_covers_every_redirect_hop(
    clients: ServiceClients, downstream: Downstream
) -> None:
    for here, there in (("/a", "/b"), ("/b", "/c"), ("/c", "/d")):
        downstream.script("GET", here, Reply(307, headers={"Location": there}, delay_s=0.2))
    downstream.script("GET", "/d", Reply(200, json={}))
    error = await call_error(clients, step(path="/a"), timeout_s=0.5)  # each hop fits alone
    assert error.reason == "timeout"


# -- redirects ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_same_origin_307_keeps_method_and_body(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("POST", "/old", redirect_to(f"{downstream.url}/new", status=307))
    downstream.script("POST", "/new", Reply(200, json={"moved": True}))
    response = await clients.call("studio", step("POST", "/old", json_body={"a": 1}), 5)
    assert response.body == {"moved": True}
    old, new = downstream.requests
    assert (old.method, old.json) == ("POST", {"a": 1})
    assert (new.method, new.path, new.json) == ("POST", "/new", {"a": 1})
    assert new.headers["Idempotency-Key"] == KEY


@pytest.mark.asyncio
async def test_same_origin_303_becomes_get_without_body(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("POST", "/old", redirect_to("/result?id=3", status=303))
    downstream.script("GET", "/result", Reply(200, json={"done": True}))
    response = await clients.call("studio", step("POST", "/old", json_body={"a": 1}), 5)
    assert response.body == {"done": True}
    new = downstream.requests[1]
    assert (new.method, new.path, new.query, new.body) == ("GET", "/result", {"id": "3"}, b"")
    assert "Content-Type" not in new.headers


@pytest.mark.asyncio
async def test_cross_origin_redirects_are_refused(
    clients: ServiceClients, downstream: Downstream
) -> None:
    async with Downstream() as other:
        other.script("*", "/{any}", Reply(200, json={"stolen": True}))
        for target in (f"{other.url}/steal", "http://169.254.169.254/latest/meta-data"):
            downstream.script("GET", "/blobs/1", redirect_to(target, status=307))
            error = await call_error(clients, step())
            assert (error.reason, error.retryable) == ("redirect", False)
            assert target in str(error)
        assert other.requests == []


@pytest.mark.asyncio
async def test_redirect_loop_stops_after_three_hops(
    clients: ServiceClients, downstream: Downstream
) -> None:
    downstream.script("GET", "/loop", redirect_to("/loop"))
    error = await call_error(clients, step(path="/loop"))
    assert error.reason == "redirect"
    assert len(downstream.requests) == 4  # the call and three redirects


@pytest.mark.asyncio
async def test_redirect_without_location(clients: ServiceClients, downstream: Downstream) -> None:
    downstream.script("GET", "/blobs/1", Reply(302))
    error = await call_error(clients, step())
    assert error.reason == "redirect"
    assert "Location" in str(error)


# -- pooling ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_connections_are_pooled_and_limited() -> None:
    peers: list[int] = []

    async def handle(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        await asyncio.sleep(float(request.query.get("sleep", "0")))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/x", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    url = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
    try:
        async with ServiceClients({"S": url}, max_connections_per_service=2) as clients:
            for _ in range(5):
                await clients.call("s", step(path="/x"), 5)
            assert len(set(peers)) == 1  # one kept-alive connection for sequential calls
            peers.clear()
            slow = step(path="/x", query=(("sleep", "0.1"),))
            await asyncio.gather(*(clients.call("s", slow, 5) for _ in range(6)))
            assert len(set(peers)) == 2  # never more than the limit at once
    finally:
        await runner.cleanup()
