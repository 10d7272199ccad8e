"""A scripted downstream HTTP service: a real aiohttp server on a loopback port.

Tests say what each route answers, in order, and read back every request it got:

    downstream.script("POST", "/blobs/validate", [
        Reply(503),
        Reply(503, headers={"Retry-After": "1"}),
        Reply(200, json={"valid": True}),
    ])
    ...
    [call] = downstream.calls("POST", "/blobs/validate")[-1:]
    assert call.headers["Idempotency-Key"] == "..."

Replies are used in order and the last one repeats; see tests/scripting.py, which this
shares with the in-memory `tests.memory.ScriptedCaller`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, Final, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.scripting import RecordedCall, Scripted, ScriptedReply
from tests.servers.ports import LOOPBACK


class _NoJson:
    """Marks `Reply.json` as not given (None is a JSON value: `null`)."""

    def __repr__(self) -> str:
        return "NO_JSON"


NO_JSON: Final = _NoJson()

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ENDLESS_CHUNK = b"x" * 65536
# Large enough for the "50 MB body" fault cases; aiohttp's default is 1 MiB.
_MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Reply(ScriptedReply):
    """One scripted answer: `Reply(status, json=..., headers=..., ...)`.

    `json` or `body` (bytes or text) is the payload; `headers` override the defaults.
    `delay_s` waits before answering. The special behaviours are exclusive:
    `hang` never answers (until the client goes away or the server closes),
    `disconnect` closes the connection without answering (a lost response),
    `endless` streams a body that never ends.
    """

    json: object = NO_JSON
    body: bytes | str | None = None
    disconnect: bool = False
    endless: bool = False

    _EXCLUSIVE: ClassVar[tuple[str, ...]] = ("hang", "disconnect", "endless")

    def __post_init__(self) -> None:
        if self.json is not NO_JSON and self.body is not None:
            raise ValueError("Reply takes json or body, not both")
        super().__post_init__()


def redirect_to(
    location: str, *, status: int = 302, headers: Mapping[str, str] | None = None
) -> Reply:
    """A redirect reply (`Location: <location>`), for the redirect-policy tests."""
    if status not in _REDIRECT_STATUSES:
        raise ValueError(f"{status} is not a redirect status")
    return Reply(status, headers={**(headers or {}), "Location": location})


@dataclass(kw_only=True)
class RecordedRequest(RecordedCall):
    """One request as the downstream saw it (fields as in `tests.scripting.RecordedCall`).

    `outcome` is also `disconnected` or `server_closed` when the server dropped it.
    """

    headers: CIMultiDictProxy[str]
    body: bytes
    json: object
    """The body parsed as JSON; None when it is empty or not JSON (see `body`)."""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _parse_json(body: bytes) -> object:
    if not body:
        return None
    try:
        parsed: object = json.loads(body)
    except ValueError:
        return None
    return parsed


class Downstream(Scripted[Reply, RecordedRequest]):
    """A scripted HTTP server; use `async with Downstream() as server:` or the fixture.

    `script`, `calls`, `wait_for_calls`, `clear` and `requests`: see `tests.scripting`.
    """

    def __init__(self, host: str = LOOPBACK) -> None:
        super().__init__()
        self.host = host
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash: `f"{downstream.url}/blobs/1"`."""
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that gives up must cancel a hanging or
        # delayed handler, the way a real server stops working for it.
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- serving ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received_at = time.monotonic()
        body = await request.read()
        path = request.rel_url.raw_path
        route, params = self._route_for(request.method, path)
        recorded = RecordedRequest(
            method=request.method,
            path=path,
            query=dict(request.query),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            json=_parse_json(body),
            path_params=params,
            route=route.pattern if route is not None else None,
            received_at=received_at,
        )
        return await self._serve(
            recorded,
            route,
            lambda reply: self._answer(request, reply, recorded),
            lambda unscripted: web.json_response(unscripted, status=404),
        )

    async def _answer(
        self, request: web.Request, reply: Reply, recorded: RecordedRequest
    ) -> web.StreamResponse:
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.hang:
            await self._closing.wait()
            recorded.outcome = "server_closed"
            return web.Response(status=503)
        if reply.disconnect:
            return self._drop_connection(request, recorded)
        headers = CIMultiDict[str]()
        if reply.json is not NO_JSON:
            headers["Content-Type"] = "application/json"
        headers.update(reply.headers)
        if reply.endless:
            return await self._stream_forever(request, reply.status, headers, recorded)
        payload = json.dumps(reply.json).encode() if reply.json is not NO_JSON else reply.body
        recorded.outcome = "answered"
        return web.Response(status=reply.status, body=payload, headers=headers)

    def _drop_connection(self, request: web.Request, recorded: RecordedRequest) -> web.Response:
        transport = request.transport
        if transport is not None:
            transport.abort()
        recorded.outcome = "disconnected"
        # Nothing reaches the client any more; aiohttp only needs a response object.
        return web.Response(status=500)

    async def _stream_forever(
        self,
        request: web.Request,
        status: int,
        headers: CIMultiDict[str],
        recorded: RecordedRequest,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while not self._closing.is_set():
                await response.write(_ENDLESS_CHUNK)
                # write() need not yield when the socket keeps up; let others run.
                await asyncio.sleep(0)
        recorded.outcome = "server_closed" if self._closing.is_set() else "client_gone"
        return response
