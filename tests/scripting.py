"""Scripted answers per method and path pattern, and the requests they answered: what
the two downstream doubles share, `tests.servers.Downstream` (a real HTTP server) and
`tests.memory.ScriptedCaller` (step requests answered in memory).

A double subclasses `Scripted[ItsReply, ItsRequest]`, with its own `ScriptedReply` and
`RecordedCall` subclasses for what only it can do, and hands each request to `_serve`.
Tests then script it and read back what it got:

    double.script("POST", "/blobs/{id}", [Reply(503), Reply(200, json={"ok": True})])
    ...
    [call] = await double.wait_for_calls("POST", "/blobs/{id}", count=1)
    assert call.path_params == {"id": "b1"}

Replies are used in order and the last one repeats. Patterns may hold `{name}`
placeholders matching one path segment. A request no script matches gets a 404 JSON
answer and is recorded too, so "nothing else was called" can be asserted.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, Literal, TypeAlias, TypeVar
from urllib.parse import unquote

Outcome: TypeAlias = Literal["pending", "answered", "client_gone", "disconnected", "server_closed"]
"""How a request ended. `client_gone`: the client timed out or was cancelled first;
`disconnected` and `server_closed` (the HTTP server only): the server dropped it."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, kw_only=True)
class ScriptedReply:
    """One scripted answer: `status` (the only positional field), a JSON body, `headers`.

    `delay_s` waits before answering; `hang` never answers. A subclass names the
    behaviours that exclude one another in `_EXCLUSIVE`.
    """

    status: int = field(default=200, kw_only=False)
    json: object = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False

    _EXCLUSIVE: ClassVar[tuple[str, ...]] = ("hang",)

    def __post_init__(self) -> None:
        chosen = [name for name in self._EXCLUSIVE if getattr(self, name) not in (None, False)]
        if len(chosen) > 1:
            names = self._EXCLUSIVE
            raise ValueError(f"{', '.join(names[:-1])} and {names[-1]} exclude each other")
        if self.delay_s < 0:
            raise ValueError("delay_s must not be negative")


@dataclass(kw_only=True)
class RecordedCall:
    """One request as the double got it."""

    method: str
    path: str
    """As sent, still percent-encoded, without the query string."""
    query: dict[str, str]
    headers: Mapping[str, str]
    """Case-insensitive: `headers["idempotency-key"]` works."""
    json: object
    """The body as JSON (each double says what None means)."""
    path_params: dict[str, str]
    """Decoded values of the matched pattern's `{name}` placeholders."""
    route: str | None
    """The matched script's pattern; None for an unscripted request (answered 404)."""
    received_at: float
    """`time.monotonic()` when the request came: compare for backoff gaps."""
    outcome: Outcome = "pending"
    _finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    async def finished(self, timeout_s: float = 5.0) -> Outcome:
        """Wait until the double is done with the request; its final `outcome`."""
        async with asyncio.timeout(timeout_s):
            await self._finished.wait()
        return self.outcome


ReplyT = TypeVar("ReplyT", bound=ScriptedReply)
CallT = TypeVar("CallT", bound=RecordedCall)
AnswerT = TypeVar("AnswerT")

Responder: TypeAlias = ReplyT | Callable[[CallT], ReplyT]
"""A fixed reply, or a function of the request (e.g. to echo a header)."""


@dataclass
class _Route(Generic[ReplyT, CallT]):
    method: str
    pattern: str
    regex: re.Pattern[str]
    placeholders: int
    order: int
    replies: Sequence[Responder[ReplyT, CallT]]
    served: int = 0

    def next_reply(self, call: CallT) -> ReplyT:
        responder = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return responder if isinstance(responder, ScriptedReply) else responder(call)


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


def _matches(method: str | None, pattern: str | None, call: RecordedCall) -> bool:
    if method is not None and method.upper() not in ("*", call.method):
        return False
    return pattern is None or _compile(pattern)[0].fullmatch(call.path) is not None


class Scripted(Generic[ReplyT, CallT]):
    """Scripts per method and path pattern, and every request recorded in order."""

    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], _Route[ReplyT, CallT]] = {}
        self._requests: list[CallT] = []
        self._recorded = asyncio.Condition()

    @property
    def requests(self) -> list[CallT]:
        """Every request so far, in the order they came."""
        return self._requests

    def script(
        self,
        method: str,
        pattern: str,
        replies: Responder[ReplyT, CallT] | Sequence[Responder[ReplyT, CallT]],
    ) -> None:
        """Answer `method pattern` with `replies` in order, repeating the last one.

        Scripting the same method and pattern again replaces the script and starts its
        sequence over. When several patterns match, the one with fewer placeholders
        wins, then the one scripted first. `method` "*" matches every method.
        """
        sequence = [replies] if isinstance(replies, ScriptedReply) or callable(replies) else replies
        if not sequence:
            raise ValueError("a script needs at least one reply")
        regex, placeholders = _compile(pattern)
        key = (method.upper(), pattern)
        previous = self._routes.get(key)
        order = previous.order if previous is not None else len(self._routes)
        self._routes[key] = _Route(key[0], pattern, regex, placeholders, order, list(sequence))

    def calls(self, method: str | None = None, pattern: str | None = None) -> list[CallT]:
        """Recorded requests with this method and a path matching `pattern`."""
        return [call for call in self._requests if _matches(method, pattern, call)]

    async def wait_for_calls(
        self,
        method: str | None = None,
        pattern: str | None = None,
        *,
        count: int = 1,
        timeout_s: float = 5.0,
    ) -> list[CallT]:
        """Wait until at least `count` matching requests came; return them all.

        Fails the test with what did come when the deadline passes.
        """
        try:
            async with asyncio.timeout(timeout_s), self._recorded:
                await self._recorded.wait_for(lambda: len(self.calls(method, pattern)) >= count)
        except TimeoutError:
            seen = [f"{c.method} {c.path}" for c in self._requests]
            raise AssertionError(
                f"expected {count} x {method or '*'} {pattern or '*'} within {timeout_s} s; "
                f"got {seen}"
            ) from None
        return self.calls(method, pattern)

    def clear(self) -> None:
        """Forget recorded requests (scripts and their positions stay)."""
        self._requests.clear()

    # -- for the doubles ----------------------------------------------------------------

    def _route_for(
        self, method: str, path: str
    ) -> tuple[_Route[ReplyT, CallT] | None, dict[str, str]]:
        """The script answering `method path` and the decoded values of its placeholders."""
        candidates = sorted(
            (r for r in self._routes.values() if r.method in ("*", method)),
            key=lambda r: (r.placeholders, r.order),
        )
        for route in candidates:
            match = route.regex.fullmatch(path)
            if match is not None:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
        return None, {}

    async def _serve(
        self,
        call: CallT,
        route: _Route[ReplyT, CallT] | None,
        answer: Callable[[ReplyT], Awaitable[AnswerT]],
        unscripted: Callable[[dict[str, str]], AnswerT],
    ) -> AnswerT:
        """Record `call` and answer it: `answer` the route's next reply, or when no script
        matched, `unscripted` with the 404's JSON body. A cancelled answer leaves the call
        `client_gone`; either way it is finished after."""
        self._requests.append(call)
        async with self._recorded:
            self._recorded.notify_all()
        try:
            if route is None:
                call.outcome = "answered"
                return unscripted({"error": "unscripted", "method": call.method, "path": call.path})
            return await answer(route.next_reply(call))
        except asyncio.CancelledError:
            call.outcome = "client_gone"
            raise
        finally:
            call._finished.set()
