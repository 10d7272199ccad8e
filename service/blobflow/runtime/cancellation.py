"""Cancelling an execution on request, wherever it runs; the one owner of that flow.

A user's cancel must abort the in-flight request and run compensations; a
process shutdown (the task's own CancelledError) must do neither, so the run
resumes elsewhere. A `CancelToken` carries the first kind; CancelledError
stays the second.

The request is recorded first (`cancel_requested`), so it survives any crash:
whoever runs the execution next cancels it before its next step. Then the
worker holding the execution's lease is asked directly (`OwnerChannel`, NATS
request/reply on `blobflow.cancel.<worker_id>`): it aborts the in-flight call,
runs the compensations, records the cancel and only then replies. The request
carries the caller's API token, and the owner checks it itself (`cancel_for`):
it trusts the stored record, never the requester, for whose execution it is.
An execution nobody holds (pending, or its owner died and the lease ran out) is
claimed and cancelled by the worker that received the request. `Runs` is this process's
registry of what it runs: the one place a run is found to be stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar

from blobflow.core.leases import Lease
from blobflow.core.records import TERMINAL, Execution
from blobflow.core.tokens import ApiToken, TokenTable
from blobflow.errors import ExecutionCancelled
from blobflow.runtime.ports import ExecutionStore, OwnerChannel

T = TypeVar("T")
logger = logging.getLogger(__name__)
# The owner replies once compensations are done; they may call slow services.
CANCEL_WAIT_S: Final = 10.0
MAX_ROUNDS: Final = 3
# An execution just stored leased here reaches the queue a moment later.
ARRIVAL_WAIT_S: Final = 1.0

Outcome = Literal["cancelled", "finished", "requested", "missing"]
# The owner's answer to another replica's request.
Answer = Literal["cancelled", "not running", "not allowed"]


def raise_if_cancelling() -> None:
    """Deliver a task cancellation that a library swallowed.

    PyMongo's async driver (4.20) sometimes lets an operation finish and
    return normally although its task was cancelled meanwhile: measured here,
    about one cancel in seven during a `find_one`. A loop that then carries
    on never ends, and the TaskGroup waiting for it hangs the shutdown. Every
    long-running loop calls this once per round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class CancelToken:
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise ExecutionCancelled("execution cancelled")

    async def guard(self, work: Coroutine[Any, Any, T]) -> T:
        """Await `work`, abandoning it with ExecutionCancelled if the token fires first."""
        if self._event.is_set():
            work.close()
            raise ExecutionCancelled("execution cancelled")
        task = asyncio.ensure_future(work)
        waiter = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task.cancelled():
            raise ExecutionCancelled("execution cancelled")
        return task.result()


class _Run:
    """One execution running in this process: how to stop it, and when it has stopped."""

    __slots__ = ("done", "token")

    def __init__(self) -> None:
        self.token = CancelToken()
        self.done = asyncio.Event()


class Runs:
    """The executions this process runs, by id; and a signal whenever one starts or
    is queued here, so a cancel that found it in neither place can wait for it."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._arrivals: set[asyncio.Future[None]] = set()

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._runs

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._runs))

    def __len__(self) -> int:
        return len(self._runs)

    @contextlib.asynccontextmanager
    async def run(
        self, execution_id: str, *, cancelled: bool = False
    ) -> AsyncIterator[CancelToken]:
        """Register a run of `execution_id`, its token fired when `cancelled`.

        Registered before the first await, so a cancel finds it from the
        moment it left the queue. An earlier run of the same execution (this
        process lost its lease and has just claimed it again) stops at its
        next fenced write; this one waits for it, so there is one run per
        execution and one set of compensations.
        """
        earlier = self._runs.get(execution_id)
        run = self._runs[execution_id] = _Run()
        self.notify()
        if cancelled:
            run.token.cancel()
        try:
            if earlier is not None:
                await earlier.done.wait()
            yield run.token
        finally:
            if self._runs.get(execution_id) is run:
                del self._runs[execution_id]
            run.done.set()

    def next_arrival(self) -> asyncio.Future[None]:
        """Done at the next run or queued execution; registered at once, so nothing that
        happens after this call is missed."""
        waiter = asyncio.get_running_loop().create_future()
        self._arrivals.add(waiter)
        waiter.add_done_callback(self._arrivals.discard)
        return waiter

    def notify(self) -> None:
        for waiter in list(self._arrivals):
            if not waiter.done():
                waiter.set_result(None)

    async def cancel(self, execution_id: str) -> bool:
        """Stop a run of this process and wait until it has compensated and recorded it;
        False when it does not run here."""
        run = self._runs.get(execution_id)
        if run is None:
            return False
        run.token.cancel()
        await run.done.wait()
        return True


class Runner(Protocol):
    """What the cancel flow needs of the engine (`blobflow.runtime.engine.Engine`)."""

    worker_id: str
    runs: Runs

    async def resume(self, execution_id: str, *, cancelled: bool = False) -> Execution | None: ...

    async def run_leased(
        self, execution: Execution, lease: Lease, *, cancelled: bool = False
    ) -> Execution | None: ...


class Queue(Protocol):
    """What it needs of the dispatcher (`blobflow.runtime.dispatcher.Dispatcher`)."""

    def withdraw(self, execution_id: str) -> tuple[Execution, Lease] | None: ...


@dataclass(frozen=True, slots=True)
class CancelResult:
    """`cancelled`: it is; `finished`: it had ended before; `requested`: recorded, under way."""

    outcome: Outcome
    execution: Execution | None


class Canceller:
    def __init__(
        self,
        owners: OwnerChannel,
        store: ExecutionStore,
        engine: Runner,
        dispatcher: Queue,
        *,
        wait_s: float = CANCEL_WAIT_S,
        tokens: Sequence[ApiToken] = (),
    ) -> None:
        self.owners = owners
        self.store = store
        self.engine = engine
        self.dispatcher = dispatcher
        self.wait_s = wait_s
        self.tokens = TokenTable(tokens)

    async def cancel(self, execution_id: str, *, token: str | None = None) -> CancelResult:
        """Cancel and wait for it, up to `wait_s`; then report what the record says.

        The caller may cancel it (the API checked); `token`, the caller's API token, is
        passed to the replica that runs it, which checks it again. Work cut short by the
        wait is interrupted like a shutdown: the lease runs out, and whoever resumes the
        execution finishes the cancel.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        try:
            async with asyncio.timeout_at(deadline):
                for round_number in range(MAX_ROUNDS):
                    first = round_number == 0
                    ended = await self._round(execution_id, deadline, token, first=first)
                    if ended is not None:
                        return ended
        except TimeoutError:
            pass
        found = await self.store.get_with_owner(execution_id)
        if found is None:
            return CancelResult("missing", None)
        execution = found[0]
        if execution.status == "cancelled":
            return CancelResult("cancelled", execution)
        if execution.status in TERMINAL:
            return CancelResult("finished", execution)
        return CancelResult("requested", execution)

    async def _round(
        self, execution_id: str, deadline: float, token: str | None, *, first: bool
    ) -> CancelResult | None:
        """One attempt; a result when the execution has ended (or is gone)."""
        found = await self.store.get_with_owner(execution_id)
        if found is None:
            return CancelResult("missing", None)
        execution, owner = found
        if execution.status in TERMINAL:
            # Ended before this request did anything, even if it ended cancelled.
            cancelled = execution.status == "cancelled" and not first
            return CancelResult("cancelled" if cancelled else "finished", execution)
        if not execution.cancel_requested and not await self.store.request_cancel(execution_id):
            return None  # it finished meanwhile: the next read says how
        if owner is None:
            # Nobody holds it: take it and cancel it here (None: another worker was faster).
            await self.engine.resume(execution_id, cancelled=True)
        elif owner == self.engine.worker_id:
            await self.cancel_here(execution_id)
        else:
            timeout_s = deadline - asyncio.get_running_loop().time()
            answer = await self.owners.ask_cancel(
                owner, execution_id, max(timeout_s, 0.1), token=token
            )
            if answer is None:
                # The owner is gone, slow or refused: the recorded request stands, and
                # the owner's heartbeat, or whoever runs the execution next, cancels it.
                raise TimeoutError
        # Cancelled, or not found where the lease said: the next round reads again.
        return None

    async def cancel_for(self, execution_id: str, authorization: str | None) -> Answer:
        """Cancel a run of this worker that another replica asks for, on behalf of the
        caller whose `Authorization` value (`Bearer <token>`) the request carries.

        Allowed as over HTTP: to anyone without tokens configured, else to an admin
        token or to the token of the execution's own user, as the stored record names
        it (never as the request says). Then as `cancel_here`.
        """
        caller = self.tokens.principal(authorization)
        if caller is not None and not caller.admin:
            execution = await self.store.get(execution_id)
            if execution is None or not caller.sees(execution.user_id):
                # Whether it exists is none of this caller's business: the same answer.
                logger.warning("refused to cancel %s for user %s", execution_id, caller.user_id)
                return "not allowed"
        elif caller is None:
            # Never the token itself.
            logger.warning("refused to cancel %s: the request has no valid token", execution_id)
            return "not allowed"
        return "cancelled" if await self.cancel_here(execution_id) else "not running"

    async def cancel_here(self, execution_id: str) -> bool:
        """Cancel a run of this worker, running or queued; False when it has neither.

        Stored leased here, an execution reaches the queue a moment later (see
        `Admission`): one that is in neither place is waited for, briefly.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ARRIVAL_WAIT_S):
                while True:
                    arrival = self.engine.runs.next_arrival()  # before looking: none missed
                    try:
                        if await self._cancel_present(execution_id):
                            return True
                        await arrival
                    finally:
                        arrival.cancel()
        return False

    async def _cancel_present(self, execution_id: str) -> bool:
        if execution_id in self.engine.runs:
            return await self.engine.runs.cancel(execution_id)
        queued = self.dispatcher.withdraw(execution_id)
        if queued is None:
            return False
        execution, lease = queued
        await self.engine.run_leased(execution, lease, cancelled=True)
        return True
