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

Replies are used in order and the last one repeats. Patterns may hold `{name}`
placeholders matching one path segment. A request no script matches gets a 404 JSON
answer and is recorded too, so "nothing else was called" can be asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, Literal, Self, TypeAlias
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

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
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

Outcome: TypeAlias = Literal["pending", "answered", "client_gone", "disconnected", "server_closed"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    `json` or `body` (bytes or text) is the payload; `headers` override the defaults.
    `delay_s` waits before answering. The special behaviours are exclusive:
    `hang` never answers (until the client goes away or the server closes),
    `disconnect` closes the connection without answering (a lost response),
    `endless` streams a body that never ends.
    """

    status: int = 200
    json: object = NO_JSON
    body: bytes | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False
    disconnect: bool = False
    endless: bool = False

    def __post_init__(self) -> None:
        if self.json is not NO_JSON and self.body is not None:
            raise ValueError("Reply takes json or body, not both")
        if sum((self.hang, self.disconnect, self.endless)) > 1:
            raise ValueError("hang, disconnect and endless exclude each other")
        if self.delay_s < 0:
            raise ValueError("delay_s must not be negative")


def redirect_to(
    location: str, *, status: int = 302, headers: Mapping[str, str] | None = None
) -> Reply:
    """A redirect reply (`Location: <location>`), for the redirect-policy tests."""
    if status not in _REDIRECT_STATUSES:
        raise ValueError(f"{status} is not a redirect status")
    return Reply(status, headers={**(headers or {}), "Location": location})


@dataclass
class RecordedRequest:
    """One request as the downstream saw it."""

    method: str
    path: str
    """The path as sent, still percent-encoded, without the query string."""
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    """Case-insensitive: `headers["idempotency-key"]` works."""
    body: bytes
    json: object
    """The body parsed as JSON; None when it is empty or not JSON (see `body`)."""
    path_params: dict[str, str]
    """Decoded values of the matched pattern's `{name}` placeholders."""
    route: str | None
    """The matched script's pattern; None for an unscripted request (answered 404)."""
    received_at: float
    """`time.monotonic()` when the request arrived: compare for backoff gaps."""
    outcome: Outcome = "pending"
    """How it ended: answered, the client went away first, or we dropped it."""
    _finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    async def finished(self, timeout_s: float = 5.0) -> Outcome:
        """Wait until the server is done with the request; its final `outcome`."""
        async with asyncio.timeout(timeout_s):
            await self._finished.wait()
        return self.outcome


Responder: TypeAlias = Reply | Callable[[RecordedRequest], Reply]
"""A fixed reply, or a function of the request (e.g. to echo a header)."""


@dataclass
class _Route:
    method: str
    pattern: str
    regex: re.Pattern[str]
    placeholders: int
    order: int
    replies: Sequence[Responder]
    served: int = 0

    def next_reply(self, request: RecordedRequest) -> Reply:
        responder = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return responder if isinstance(responder, Reply) else responder(request)


@functools.lru_cache(maxsize=256)
def _compile(pattern: str) -> tuple[re.Pattern[str], int]:
    if not pattern.startswith("/"):
        raise ValueError(f"pattern must start with '/': {pattern!r}")
    parts: list[str] = []
    position = 0
    for match in _PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[position : match.start()]))
        parts.append(f"(?P<{match.group(1)}>[^/]+)")
        position = match.end()
    parts.append(re.escape(pattern[position:]))
    return re.compile("".join(parts)), pattern.count("{")


def _matches(method: str | None, pattern: str | None, request: RecordedRequest) -> bool:
    if method is not None and method.upper() not in ("*", request.method):
        return False
    return pattern is None or _compile(pattern)[0].fullmatch(request.path) is not None


def _parse_json(body: bytes) -> object:
    if not body:
        return None
    try:
        parsed: object = json.loads(body)
    except ValueError:
        return None
    return parsed


class Downstream:
    """A scripted HTTP server; use `async with Downstream() as server:` or the fixture."""

    def __init__(self, host: str = LOOPBACK) -> None:
        self.host = host
        self.port = 0
        self._routes: dict[tuple[str, str], _Route] = {}
        self._requests: list[RecordedRequest] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._recorded = asyncio.Condition()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash: `f"{downstream.url}/blobs/1"`."""
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order."""
        return self._requests

    # -- scripting ----------------------------------------------------------------------

    def script(self, method: str, pattern: str, replies: Responder | Sequence[Responder]) -> None:
        """Answer `method pattern` with `replies` in order, repeating the last one.

        Scripting the same method and pattern again replaces the script and starts its
        sequence over. When several patterns match, the one with fewer placeholders
        wins, then the one scripted first. `method` "*" matches every method.
        """
        sequence = [replies] if isinstance(replies, Reply) or callable(replies) else replies
        if not sequence:
            raise ValueError("a script needs at least one reply")
        regex, placeholders = _compile(pattern)
        key = (method.upper(), pattern)
        previous = self._routes.get(key)
        order = previous.order if previous is not None else len(self._routes)
        self._routes[key] = _Route(key[0], pattern, regex, placeholders, order, list(sequence))

    def calls(self, method: str | None = None, pattern: str | None = None) -> list[RecordedRequest]:
        """Recorded requests with this method and a path matching `pattern`."""
        return [request for request in self._requests if _matches(method, pattern, request)]

    async def wait_for_calls(
        self,
        method: str | None = None,
        pattern: str | None = None,
        *,
        count: int = 1,
        timeout_s: float = 5.0,
    ) -> list[RecordedRequest]:
        """Wait until at least `count` matching requests arrived; return them all.

        Fails the test with what did arrive when the deadline passes.
        """
        try:
            async with asyncio.timeout(timeout_s), self._recorded:
                await self._recorded.wait_for(lambda: len(self.calls(method, pattern)) >= count)
        except TimeoutError:
            seen = [f"{r.method} {r.path}" for r in self._requests]
            raise AssertionError(
                f"expected {count} x {method or '*'} {pattern or '*'} within {timeout_s} s; "
                f"got {seen}"
            ) from None
        return self.calls(method, pattern)

    def clear(self) -> None:
        """Forget recorded requests (scripts and their positions stay)."""
        self._requests.clear()

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

    def _route_for(self, method: str, path: str) -> tuple[_Route | None, dict[str, str]]:
        candidates = sorted(
            (r for r in self._routes.values() if r.method in ("*", method)),
            key=lambda r: (r.placeholders, r.order),
        )
        for route in candidates:
            match = route.regex.fullmatch(path)
            if match is not None:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
        return None, {}

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
        self._requests.append(recorded)
        async with self._recorded:
            self._recorded.notify_all()
        try:
            if route is None:
                recorded.outcome = "answered"
                return web.json_response(
                    {"error": "unscripted", "method": request.method, "path": path}, status=404
                )
            return await self._answer(request, route.next_reply(recorded), recorded)
        except asyncio.CancelledError:
            recorded.outcome = "client_gone"
            raise
        finally:
            recorded._finished.set()

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
