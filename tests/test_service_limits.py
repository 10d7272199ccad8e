"""Per-service limits and the circuit breaker, against an in-memory caller."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import pytest

from blobflow.core.step_requests import HttpResponse, StepRequest
from blobflow.downstream.limits import CircuitBreaker, LimitedCaller, ServiceLimits, limits_from_env
from blobflow.errors import ConfigError, HttpCallError

REQUEST = StepRequest("POST", "/x", (), {}, {})
URLS = {"STUDIO": "http://127.0.0.1:1"}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {}),
        ({"BLOBFLOW_SERVICE_STUDIO_MAX_CONCURRENCY": "4"}, {"STUDIO": ServiceLimits(4, None)}),
        ({"BLOBFLOW_SERVICE_STUDIO_RATE_LIMIT": "0.5"}, {"STUDIO": ServiceLimits(None, 0.5)}),
        (
            {
                "BLOBFLOW_SERVICE_studio_MAX_CONCURRENCY": " 2 ",
                "BLOBFLOW_SERVICE_STUDIO_RATE_LIMIT": "20",
            },
            {"STUDIO": ServiceLimits(2, 20.0)},
        ),
    ],
)
def test_limits_from_env(environ: dict[str, str], expected: dict[str, ServiceLimits]) -> None:
    assert limits_from_env(environ, URLS) == expected


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"BLOBFLOW_SERVICE_STUDIO_MAX_CONCURRENCY": "0"}, "must be an integer from 1 to 10000"),
        ({"BLOBFLOW_SERVICE_STUDIO_MAX_CONCURRENCY": "1.5"}, "must be an integer from 1 to 10000"),
        ({"BLOBFLOW_SERVICE_STUDIO_RATE_LIMIT": "0"}, "must be a number of requests per second"),
        ({"BLOBFLOW_SERVICE_STUDIO_RATE_LIMIT": "inf"}, "must be a number of requests per second"),
        ({"BLOBFLOW_SERVICE_STUDIO_RATE_LIMIT": "fast"}, "must be a number of requests per second"),
        ({"BLOBFLOW_SERVICE_CORE_RATE_LIMIT": "1"}, "no service CORE"),
    ],
)
def test_bad_limits_name_their_variable(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        limits_from_env(environ, URLS)
    variable = next(iter(environ))
    assert str(caught.value).startswith(f"{variable}: ")
    assert problem in str(caught.value)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# (seconds passed, outcome of the call if it is allowed, allowed?, state after)
STEPS: list[tuple[float, bool, bool, str]] = [
    (0, False, True, "closed"),
    (0, False, True, "closed"),
    (0, False, True, "open"),  # the third failure in a row opens it
    (1, True, False, "open"),  # refused while open
    (5, True, True, "closed"),  # half open after 5 s: the probe succeeds
    (0, False, True, "closed"),
    (0, False, True, "closed"),
    (0, False, True, "open"),
    (5, False, True, "open"),  # a failed probe opens it again
    (1, True, False, "open"),
]


def test_the_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_s=5, clock=clock)
    for index, (passed_s, ok, allowed, state) in enumerate(STEPS):
        clock.now += passed_s
        assert breaker.allow() is allowed, index
        if allowed:
            breaker.record(ok)
        assert breaker.state == state, index


def test_half_open_lets_one_probe_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, open_s=1, clock=clock)
    assert breaker.allow()
    breaker.record(ok=False)
    clock.now = 2
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # others wait for its outcome
    breaker.release()  # cancelled: no outcome
    assert breaker.allow()


class Service:
    """A downstream stand-in: answers `status` after `delay_s`, counting what is in flight."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status = status
        self.delay_s = delay_s
        self.in_flight = 0
        self.most_in_flight = 0
        self.started: list[float] = []

    async def call(self, service: str, request: StepRequest, timeout_s: float) -> HttpResponse:
        self.started.append(time.monotonic())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.status == 0:
                raise HttpCallError("connect", "refused")
            return HttpResponse(self.status, {}, {})
        finally:
            self.in_flight -= 1


@pytest.mark.asyncio
async def test_concurrency_is_capped_per_service() -> None:
    service = Service(delay_s=0.02)
    caller = LimitedCaller(service, {"STUDIO": ServiceLimits(max_concurrency=3)})
    await asyncio.gather(*(caller.call("studio", REQUEST, 5) for _ in range(12)))
    assert service.most_in_flight == 3


@pytest.mark.asyncio
async def test_a_service_without_limits_is_not_held_back() -> None:
    service = Service(delay_s=0.02)
    caller = LimitedCaller(service, {"STUDIO": ServiceLimits(max_concurrency=1)})
    await asyncio.gather(*(caller.call("core", REQUEST, 5) for _ in range(5)))
    assert service.most_in_flight == 5


@pytest.mark.asyncio
async def test_the_rate_spaces_calls() -> None:
    service = Service()
    caller = LimitedCaller(service, {"STUDIO": ServiceLimits(rate_per_s=50)})
    await asyncio.gather(*(caller.call("studio", REQUEST, 5) for _ in range(5)))
    gaps = [later - earlier for earlier, later in itertools.pairwise(service.started)]
    assert min(gaps) >= 0.019  # 1/50 s apart, less scheduling jitter


@pytest.mark.parametrize("status", [503, 0])
@pytest.mark.asyncio
async def test_a_failing_service_trips_the_breaker_and_calls_fail_fast(status: int) -> None:
    service = Service(status=status)
    caller = LimitedCaller(service, {}, breaker=lambda: CircuitBreaker(failures=5, open_s=60))
    for _ in range(5):
        with contextlib.suppress(HttpCallError):
            await caller.call("studio", REQUEST, 5)
    with pytest.raises(HttpCallError) as caught:
        await caller.call("studio", REQUEST, 5)
    assert caught.value.reason == "circuit_open"
    assert caught.value.retryable
    assert len(service.started) == 5


@pytest.mark.asyncio
async def test_client_errors_do_not_trip_the_breaker() -> None:
    service = Service(status=404)
    caller = LimitedCaller(service, {}, breaker=lambda: CircuitBreaker(failures=2, open_s=60))
    for _ in range(5):
        assert (await caller.call("studio", REQUEST, 5)).status == 404
    assert caller.breakers["STUDIO"].state == "closed"
