"""In-memory stand-ins for the runtime's ports, for engine tests that need no server.

`MemoryExecutionStore` keeps executions and deltas as `blobflow.store`
keeps them in MongoDB: leases fenced by owner and epoch, cancel requests
reported by every fenced write, claims of executions nobody holds, deltas
stored once with gapless per-blob versions. Documents round-trip as BSON
would (tuples become lists, datetimes keep milliseconds, integers beyond 64
bits are refused with `UnstorableError`).

`ScriptedCaller` answers step requests the way `tests.servers.Downstream`
does over HTTP: scripts per method and path pattern, replies in order with
the last one repeating, and every request recorded:

    caller = ScriptedCaller()
    caller.script("POST", "/a", [Reply(503), Reply(200, json={"ok": True})])
    engine = memory_engine(catalog, caller=caller)
    execution = await start(engine, blob_event(), binding_of(catalog, "wf"))
    assert caller.calls("POST", "/a")[-1].headers["Idempotency-Key"] == ...

`MemoryPublisher` records the delta events the engine publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeAlias
from urllib.parse import unquote

from blobflow.core.catalog import Catalog
from blobflow.core.deltas import DeltaDraft, delta_document
from blobflow.core.jsonvalues import compact_json, loads
from blobflow.core.leases import Claimed, Lease
from blobflow.core.records import (
    Execution,
    LogLine,
    from_document,
    mutable_fields,
    now,
    to_document,
)
from blobflow.core.step_requests import HttpResponse, StepRequest
from blobflow.errors import HttpCallError, LeaseLost, UnstorableError
from blobflow.runtime.engine import Engine

Document = dict[str, Any]

_INT64 = range(-(2**63), 2**63)
# The lease of an execution nobody holds: expired on any clock.
_FREE = -math.inf


class ManualClock:
    """A clock that moves only when told to; pass it as `MemoryExecutionStore(clock=...)`."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


# -- the execution store --------------------------------------------------------------


class MemoryExecutionStore:
    """`blobflow.runtime.ports.ExecutionStore` in a dict, with MongoDB's semantics.

    Lease expiry is measured on `clock` (seconds, `time.monotonic` unless
    given). `logs(execution_id)` and `deltas` let tests read what was written.
    Every method is atomic: none awaits anything.
    """

    def __init__(
        self,
        *,
        lease_ms: int = 15_000,
        max_logs: int = 5_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease_ms = lease_ms
        self.max_logs = max_logs
        self.clock = clock
        self.executions: dict[str, Document] = {}  # as MongoDB holds them, lease included
        self._logs: dict[str, list[LogLine]] = {}
        self.deltas: dict[str, Document] = {}  # by `_id`, in insertion order

    # -- leases --

    def _now_ms(self) -> float:
        return self.clock() * 1000

    def _lease(self, owner: str | None, epoch: int) -> Document:
        expires = _FREE if owner is None else self._now_ms() + self.lease_ms
        return {"owner": owner, "epoch": epoch, "expires_ms": expires}

    def _expired(self, document: Document) -> bool:
        return bool(document["lease"]["expires_ms"] < self._now_ms())

    def _fenced(self, lease: Lease) -> Document:
        """The execution while `lease` holds it; else `LeaseLost`, as a fenced write."""
        document = self.executions.get(lease.execution_id)
        if (
            document is None
            or document["lease"]["owner"] != lease.owner
            or document["lease"]["epoch"] != lease.epoch
        ):
            raise LeaseLost(f"execution {lease.execution_id} is no longer owned by {lease.owner}")
        return document

    def owner_of(self, execution_id: str) -> tuple[str | None, int]:
        """Who holds the execution's lease (live or not) and its epoch."""
        lease = self.executions[execution_id]["lease"]
        return lease["owner"], lease["epoch"]

    # -- ExecutionStore --

    async def create_many(self, executions: Sequence[Execution], owner: str) -> list[Lease]:
        new = self._insert_new(executions, owner=owner, epoch=1)
        return [Lease(e.id, owner, 1) for e in executions if e.id in new]

    async def park_many(self, executions: Sequence[Execution]) -> set[str]:
        return self._insert_new(executions, owner=None, epoch=0)

    def _insert_new(
        self, executions: Sequence[Execution], *, owner: str | None, epoch: int
    ) -> set[str]:
        # Encoded before anything is stored, as the driver does: all or nothing.
        documents = [bson_roundtrip(to_document(execution)) for execution in executions]
        new: set[str] = set()
        for document in documents:
            if document["_id"] in self.executions:
                continue
            document["lease"] = self._lease(owner, epoch)
            self.executions[document["_id"]] = document
            self._logs[document["_id"]] = []
            new.add(document["_id"])
        return new

    async def claim(self, execution_id: str, owner: str) -> tuple[Execution, Lease] | None:
        document = self.executions.get(execution_id)
        if document is None or document["status"] not in ("pending", "running"):
            return None
        if not self._expired(document):
            return None
        document["status"] = "running"
        document["started_at"] = document["started_at"] or now()
        document["lease"] = self._lease(owner, document["lease"]["epoch"] + 1)
        return _execution(document), Lease(execution_id, owner, document["lease"]["epoch"])

    async def claim_many(self, owner: str, limit: int) -> Claimed:
        # Like MongoDB's: the lease changes hands, the status stays (the run sets it).
        if limit <= 0:
            return Claimed([], more=False)
        free = [
            d
            for d in self.executions.values()
            if d["status"] in ("pending", "running") and self._expired(d)
        ]
        free.sort(key=lambda d: (-d["priority"], d["created_at"]))
        candidates = free[:limit]
        leased = []
        for document in candidates:
            document["lease"] = self._lease(owner, document["lease"]["epoch"] + 1)
            lease = Lease(document["_id"], owner, document["lease"]["epoch"])
            leased.append((_execution(document), lease))
        return Claimed(leased, more=len(candidates) == limit)

    async def checkpoint(
        self, lease: Lease, execution: Execution, logs: Sequence[LogLine] = ()
    ) -> bool:
        # Encoded before it is sent: an unstorable write fails, whoever holds the lease.
        fields = bson_roundtrip(mutable_fields(execution))
        lines = bson_roundtrip([_log_fields(line) for line in logs])
        document = self._fenced(lease)
        document.update(fields)
        document["lease"]["expires_ms"] = self._now_ms() + self.lease_ms
        kept = self._logs[lease.execution_id]
        kept.extend(LogLine(**line) for line in lines[: max(self.max_logs - len(kept), 0)])
        return bool(document["cancel_requested"])

    async def renew(self, lease: Lease) -> bool:
        document = self._fenced(lease)
        document["lease"]["expires_ms"] = self._now_ms() + self.lease_ms
        return bool(document["cancel_requested"])

    async def release(self, leases: Sequence[Lease]) -> None:
        for lease in leases:
            with contextlib.suppress(LeaseLost):  # fenced: a lost lease matches nothing
                self._fenced(lease)["lease"]["expires_ms"] = _FREE

    async def request_cancel(self, execution_id: str) -> bool:
        document = self.executions.get(execution_id)
        if document is None or document["status"] not in ("pending", "running"):
            return False
        document["cancel_requested"] = True
        return True

    async def get(self, execution_id: str) -> Execution | None:
        document = self.executions.get(execution_id)
        return None if document is None else _execution(document)

    async def get_with_owner(self, execution_id: str) -> tuple[Execution, str | None] | None:
        document = self.executions.get(execution_id)
        if document is None:
            return None
        live = document["lease"]["expires_ms"] > self._now_ms()
        owner: str | None = document["lease"]["owner"]
        return _execution(document), owner if live else None

    async def logs(self, execution_id: str) -> list[LogLine]:
        return list(self._logs.get(execution_id, ()))

    async def store_deltas(
        self, execution: Execution, drafts: Sequence[DeltaDraft]
    ) -> list[Document]:
        documents = [
            bson_roundtrip(delta_document(execution, index, draft))
            for index, draft in enumerate(drafts)
        ]
        # A resumed run finds what an interrupted one stored, and keeps it.
        version = max(
            (d["version"] for d in self.deltas.values() if d["blob_id"] == execution.blob_id),
            default=0,
        )
        for document in documents:
            if document["_id"] not in self.deltas:
                version += 1
                document["version"] = version
                self.deltas[document["_id"]] = document
        return [bson_roundtrip(self.deltas[document["_id"]]) for document in documents]

    async def unpublished(self, limit: int = 100) -> list[Execution]:
        waiting = [
            d
            for d in self.executions.values()
            if d["status"] == "completed" and not d["deltas_published"]
        ]
        waiting.sort(key=lambda d: d["completed_at"])
        return [_execution(d) for d in waiting[:limit]]

    async def deltas_of(self, execution_id: str) -> list[Document]:
        found = [d for d in self.deltas.values() if d["execution_id"] == execution_id]
        return [bson_roundtrip(d) for d in sorted(found, key=lambda d: d["version"])]

    async def mark_published(self, execution_id: str) -> None:
        document = self.executions.get(execution_id)
        if document is not None:
            document["deltas_published"] = True


def _execution(document: Document) -> Execution:
    """A record read back: a copy, sharing nothing with the stored document."""
    copy = bson_roundtrip({k: v for k, v in document.items() if k != "lease"})
    return from_document(copy)


def _log_fields(line: LogLine) -> Document:
    return {
        "timestamp": line.timestamp,
        "level": line.level,
        "step_id": line.step_id,
        "message": line.message,
    }


def bson_roundtrip(value: Any) -> Any:
    """`value` as MongoDB hands it back: copied, tuples as lists, datetimes in UTC to the
    millisecond; `UnstorableError` for what BSON cannot hold, as the real store raises."""
    if value is None or isinstance(value, bool | float | str | bytes):
        return value
    if isinstance(value, int):
        if value not in _INT64:
            raise UnstorableError("MongoDB can only handle up to 8-byte ints")
        return value
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if isinstance(value, Mapping):
        copy: Document = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnstorableError(f"documents must have only string keys, key was {key!r}")
            if "\0" in key:
                raise UnstorableError(f"key {key!r} must not contain NULL bytes")
            copy[key] = bson_roundtrip(item)
        return copy
    if isinstance(value, list | tuple):
        return [bson_roundtrip(item) for item in value]
    raise UnstorableError(f"cannot encode object: {value!r}, of type: {type(value)}")


# -- the downstream services ----------------------------------------------------------


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


@dataclass(frozen=True)
class Reply:
    """One scripted answer: `status`, a JSON body (None: empty) and `headers`.

    `delay_s` waits before answering; `hang` never answers. Either runs into
    the step's timeout as a slow service would (`HttpCallError` "timeout"), and
    a cancelled run abandons it. `error` is raised instead of answering, after
    `delay_s`: a connection refused, a body that is not JSON, and so on.
    """

    status: int = 200
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False
    error: HttpCallError | None = None

    def __post_init__(self) -> None:
        if self.hang and self.error is not None:
            raise ValueError("hang and error exclude each other")
        if self.delay_s < 0:
            raise ValueError("delay_s must not be negative")


Outcome: TypeAlias = Literal["pending", "answered", "client_gone"]


@dataclass
class Call:
    """One request a step sent, as the service received it."""

    service: str
    method: str
    path: str
    """As sent, still percent-encoded, without the query string."""
    query: dict[str, str]
    headers: Headers
    json: Any
    """The body as it went over the wire (None for GET and DELETE)."""
    timeout_s: float
    route: str | None
    """The matched script's pattern; None for an unscripted request (answered 404)."""
    path_params: dict[str, str]
    received_at: float
    """`time.monotonic()` when the request was sent: compare for backoff gaps."""
    outcome: Outcome = "pending"
    """answered, or client_gone: the caller timed out or was cancelled first."""
    _finished: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)

    async def finished(self, timeout_s: float = 5.0) -> Outcome:
        """Wait until the call has ended; its final `outcome`."""
        async with asyncio.timeout(timeout_s):
            await self._finished.wait()
        return self.outcome


Responder: TypeAlias = Reply | Callable[[Call], Reply]
"""A fixed reply, or a function of the request (e.g. to echo a header)."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]")


@dataclass
class _Route:
    pattern: str
    regex: re.Pattern[str]
    placeholders: int
    order: int
    replies: Sequence[Responder]
    served: int = 0

    def next_reply(self, call: Call) -> Reply:
        responder = self.replies[min(self.served, len(self.replies) - 1)]
        self.served += 1
        return responder if isinstance(responder, Reply) else responder(call)


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


def service_variable(service: str) -> str:
    """`studio` -> `BLOBFLOW_SERVICE_STUDIO_URL`, as `blobflow.downstream` names it."""
    return f"BLOBFLOW_SERVICE_{_NON_ALNUM.sub('_', service).upper()}_URL"


class ScriptedCaller:
    """`blobflow.core.step_requests.Caller` answering from scripts; records every request.

    Only `services` are known; a call to another one fails as an unconfigured
    service does. Bodies go through JSON both ways, as over HTTP, so neither
    side shares objects with the other.
    """

    def __init__(self, services: Iterable[str] = ("studio", "core")) -> None:
        self.services = {_NON_ALNUM.sub("_", s).upper() for s in services}
        self._routes: dict[tuple[str, str], _Route] = {}
        self._requests: list[Call] = []
        self._recorded = asyncio.Condition()

    @property
    def requests(self) -> list[Call]:
        """Every request so far, in the order they were sent."""
        return self._requests

    def script(self, method: str, pattern: str, replies: Responder | Sequence[Responder]) -> None:
        """Answer `method pattern` with `replies` in order, repeating the last one.

        Scripting the same method and pattern again replaces the script. When
        several patterns match, the one with fewer `{name}` placeholders wins,
        then the one scripted first. `method` "*" matches every method.
        """
        sequence = [replies] if isinstance(replies, Reply) or callable(replies) else replies
        if not sequence:
            raise ValueError("a script needs at least one reply")
        regex, placeholders = _compile(pattern)
        key = (method.upper(), pattern)
        previous = self._routes.get(key)
        order = previous.order if previous is not None else len(self._routes)
        self._routes[key] = _Route(pattern, regex, placeholders, order, list(sequence))

    def calls(
        self, method: str | None = None, pattern: str | None = None, *, service: str | None = None
    ) -> list[Call]:
        """Recorded requests with this method, a path matching `pattern`, to `service`."""
        return [call for call in self._requests if _matches(method, pattern, service, call)]

    async def wait_for_calls(
        self,
        method: str | None = None,
        pattern: str | None = None,
        *,
        count: int = 1,
        timeout_s: float = 5.0,
    ) -> list[Call]:
        """Wait until at least `count` matching requests were sent; return them all."""
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
        self._requests.append(call)
        async with self._recorded:
            self._recorded.notify_all()
        try:
            if route is None:
                call.outcome = "answered"
                body = {"error": "unscripted", "method": request.method, "path": request.path}
                return HttpResponse(404, body, Headers({"Content-Type": "application/json"}))
            return await self._answer(service, route.next_reply(call), call, timeout_s)
        except asyncio.CancelledError:
            call.outcome = "client_gone"
            raise
        finally:
            call._finished.set()

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

    def _route_for(self, method: str, path: str) -> tuple[_Route | None, dict[str, str]]:
        candidates = sorted(
            (r for (m, _), r in self._routes.items() if m in ("*", method)),
            key=lambda r: (r.placeholders, r.order),
        )
        for route in candidates:
            match = route.regex.fullmatch(path)
            if match is not None:
                return route, {k: unquote(v) for k, v in match.groupdict().items()}
        return None, {}


def _matches(method: str | None, pattern: str | None, service: str | None, call: Call) -> bool:
    if method is not None and method.upper() not in ("*", call.method):
        return False
    if service is not None and service != call.service:
        return False
    return pattern is None or _compile(pattern)[0].fullmatch(call.path) is not None


def _over_the_wire(value: Any) -> Any:
    """`value` sent as JSON and parsed again (integers beyond 64 bits stay exact)."""
    return None if value is None else loads(compact_json(value).encode())


# -- the delta events -----------------------------------------------------------------


class MemoryPublisher:
    """`blobflow.runtime.ports.DeltaPublisher` keeping what it published.

    Set `confirm = False` to have it report the events unconfirmed (nothing
    is recorded), or `error` to have it raise that error.
    """

    def __init__(self) -> None:
        self.batches: list[list[Document]] = []
        self.confirm = True
        self.error: BaseException | None = None

    async def publish(self, deltas: Sequence[Mapping[str, Any]]) -> bool:
        if self.error is not None:
            raise self.error
        if not self.confirm:
            return False
        self.batches.append([bson_roundtrip(delta) for delta in deltas])
        return True

    @property
    def published(self) -> list[Document]:
        """Every delta event confirmed, in order."""
        return [delta for batch in self.batches for delta in batch]


# -- wiring ---------------------------------------------------------------------------


def memory_engine(
    catalog: Catalog,
    *,
    lease_ms: int = 15_000,
    caller: ScriptedCaller | None = None,
    store: MemoryExecutionStore | None = None,
    sink: MemoryPublisher | None = None,
    worker_id: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Engine:
    """An engine on in-memory ports; new ones for those not given.

    `lease_ms` and `clock` configure a new store. Reach the parts again with
    `memory_store`, `scripted_caller` and `memory_publisher`.
    """
    return Engine(
        catalog,
        store or MemoryExecutionStore(lease_ms=lease_ms, clock=clock),
        caller or ScriptedCaller(),
        worker_id=worker_id,
        sink=sink or MemoryPublisher(),
    )


def memory_store(engine: Engine) -> MemoryExecutionStore:
    assert isinstance(engine.store, MemoryExecutionStore)
    return engine.store


def scripted_caller(engine: Engine) -> ScriptedCaller:
    assert isinstance(engine.caller, ScriptedCaller)
    return engine.caller


def memory_publisher(engine: Engine) -> MemoryPublisher:
    assert isinstance(engine.sink, MemoryPublisher)
    return engine.sink
