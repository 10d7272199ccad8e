"""`ScriptedCaller`: step requests answered in memory the way `tests.servers.Downstream`
answers them over HTTP, scripted and recorded alike (see tests/scripting.py):

    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(503), Reply(200, json={"ok": True})])
    engine = memory_engine(catalog, caller=caller)
    execution = await start(engine, blob_event(), binding_of(catalog, "wf"))
    assert caller.calls("POST", "/a")[-1].headers["Idempotency-Key"] == ...
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from blobflow.core.jsonvalues import compact_json, loads
from blobflow.core.step_requests import HttpResponse, StepRequest
from blobflow.errors import HttpCallError
from tests.scripting import RecordedCall, Scripted, ScriptedReply

_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


class Headers(Mapping[str, str]):
    """Case-insensitive, as HTTP headers are: `headers["idempotency-key"]` works."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = {name.lower(): (name, value) for name, value in (items or {}).items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True, kw_only=True)
class Reply(ScriptedReply):
    """One scripted answer: `Reply(status, json=..., headers=..., ...)`; `json` None
    answers an empty body.

    `delay_s` and `hang` run into the step's timeout as a slow service would
    (`HttpCallError` "timeout"), and a cancelled run abandons them. `error` is raised
    instead of answering, after `delay_s`: a connection refused, a body that is not
    JSON, and so on.
    """

    error: HttpCallError | None = None

    _EXCLUSIVE: ClassVar[tuple[str, ...]] = ("hang", "error")


@dataclass(kw_only=True)
class Call(RecordedCall):
    """One request a step sent, as the service received it (fields as in
    `tests.scripting.RecordedCall`)."""

    service: str
    json: Any
    """The body as it went over the wire (None for GET and DELETE)."""
    timeout_s: float


def service_variable(service: str) -> str:
    """`studio` -> `BLOBFLOW_SERVICE_STUDIO_URL`, as `blobflow.downstream` names it."""
    return f"BLOBFLOW_SERVICE_{_NON_ALNUM.sub('_', service).upper()}_URL"


class ScriptedCaller(Scripted[Reply, Call]):
    """`blobflow.core.step_requests.Caller` answering from scripts; records every request.

    Only `services` are known; a call to another one fails as an unconfigured
    service does. Bodies go through JSON both ways, as over HTTP, so neither
    side shares objects with the other.
    """

    def __init__(self, services: Iterable[str] = ("studio", "core")) -> None:
        super().__init__()
        self.services = {_NON_ALNUM.sub("_", s).upper() for s in services}

    def calls(
        self, method: str | None = None, pattern: str | None = None, *, service: str | None = None
    ) -> list[Call]:
        """Recorded requests with this method, a path matching `pattern`, to `service`."""
        return [c for c in super().calls(method, pattern) if service in (None, c.service)]

    async def call(self, service: str, request: StepRequest, timeout_s: float) -> HttpResponse:
        if _NON_ALNUM.sub("_", service).upper() not in self.services:
            raise HttpCallError(
                "unknown_service",
                f"service {service!r} is not configured: set {service_variable(service)}",
                retryable=False,
            )
        route, params = self._route_for(request.method, request.path)
        call = Call(
            service=service,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=Headers(request.headers),
            json=_over_the_wire(request.json_body),
            timeout_s=timeout_s,
            route=route.pattern if route is not None else None,
            path_params=params,
            received_at=time.monotonic(),
        )
        return await self._serve(
            call,
            route,
            lambda reply: self._answer(service, reply, call, timeout_s),
            lambda unscripted: HttpResponse(
                404, unscripted, Headers({"Content-Type": "application/json"})
            ),
        )

    async def _answer(
        self, service: str, reply: Reply, call: Call, timeout_s: float
    ) -> HttpResponse:
        try:
            async with asyncio.timeout(timeout_s):
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                if reply.hang:
                    await asyncio.get_running_loop().create_future()
        except TimeoutError:
            call.outcome = "client_gone"
            # The message `blobflow.downstream.http_caller.ServiceClients` gives.
            raise HttpCallError(
                "timeout", f"service {service!r}: no answer within {timeout_s:g} s"
            ) from None
        call.outcome = "answered"
        if reply.error is not None:
            error = reply.error
            raise HttpCallError(error.reason, str(error), retryable=error.retryable)
        headers = {"Content-Type": "application/json", **reply.headers}
        return HttpResponse(reply.status, _over_the_wire(reply.json), Headers(headers))


def _over_the_wire(value: Any) -> Any:
    """`value` sent as JSON and parsed again (integers beyond 64 bits stay exact)."""
    return None if value is None else loads(compact_json(value).encode())
