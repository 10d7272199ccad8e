"""Protecting downstream services: per-service concurrency, request rate and a circuit breaker.

A burst of blob events must not turn into a burst of requests a service
cannot take. Each service may cap the requests in flight
(`BLOBFLOW_SERVICE_<NAME>_MAX_CONCURRENCY`) and the requests per second
(`BLOBFLOW_SERVICE_<NAME>_RATE_LIMIT`); a call beyond them waits its turn.
While a service keeps failing (no answer, or 5xx) the breaker opens: calls
fail at once, retryable, instead of piling up on a service that is down; after
a cooldown one probe goes through, and its success closes the breaker.
Limits hold per replica.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from blobflow.core.step_requests import Caller, HttpResponse, StepRequest
from blobflow.downstream.http_caller import normalize_service_name
from blobflow.errors import ConfigError, HttpCallError

BREAKER_FAILURES: Final = 5
BREAKER_OPEN_S: Final = 10.0
_LIMIT_VAR: Final = re.compile(r"BLOBFLOW_SERVICE_(.+)_(MAX_CONCURRENCY|RATE_LIMIT)")

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    max_concurrency: int | None = None
    rate_per_s: float | None = None


def limits_from_env(
    environ: Mapping[str, str], services: Mapping[str, str]
) -> dict[str, ServiceLimits]:
    """{NAME: limits} from `BLOBFLOW_SERVICE_<NAME>_MAX_CONCURRENCY` / `_RATE_LIMIT`."""
    found: dict[str, dict[str, float | int]] = {}
    problems: list[str] = []
    for var in sorted(environ):
        match = _LIMIT_VAR.fullmatch(var)
        if match is None:
            continue
        name, kind, text = normalize_service_name(match.group(1)), match.group(2), environ[var]
        if name not in services:
            problems.append(f"{var}: no service {name} (BLOBFLOW_SERVICE_{name}_URL is unset)")
            continue
        if kind == "MAX_CONCURRENCY":
            value: float | int | None = _integer(text.strip())
            if value is None or not 1 <= value <= 10_000:
                problems.append(f"{var}: must be an integer from 1 to 10000")
                continue
            found.setdefault(name, {})["max_concurrency"] = value
        else:
            value = _number(text.strip())
            if value is None or not 0 < value < math.inf:
                problems.append(f"{var}: must be a number of requests per second above 0")
                continue
            found.setdefault(name, {})["rate_per_s"] = value
    if problems:
        raise ConfigError("\n".join(problems))
    return {
        name: ServiceLimits(
            max_concurrency=int(values["max_concurrency"]) if "max_concurrency" in values else None,
            rate_per_s=float(values["rate_per_s"]) if "rate_per_s" in values else None,
        )
        for name, values in found.items()
    }


class CircuitBreaker:
    """Closed → open after `failures` failures in a row → half open after `open_s` → one
    probe: its success closes, its failure opens again."""

    def __init__(
        self,
        *,
        failures: int = BREAKER_FAILURES,
        open_s: float = BREAKER_OPEN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.open_s = open_s
        self.clock = clock
        self.state: State = "closed"
        self._in_a_row = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """Whether a call may go out now (in half open state: the one probe)."""
        if self.state == "open" and self.clock() - self._opened_at >= self.open_s:
            self.state = "half_open"
        if self.state == "closed":
            return True
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """A call ended without an outcome (cancelled): let another probe go."""
        self._probing = False

    def record(self, ok: bool) -> None:
        self._probing = False
        if ok:
            self.state, self._in_a_row = "closed", 0
            return
        self._in_a_row += 1
        if self.state == "half_open" or self._in_a_row >= self.failures:
            self.state, self._opened_at = "open", self.clock()


class _Pacer:
    """Spaces calls at least 1/rate apart: a token bucket of one, waited on, not refused."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1 / rate_per_s
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            delay_s = self._next - now
            self._next = max(now, self._next) + self.interval_s
        if delay_s > 0:
            await asyncio.sleep(delay_s)


class LimitedCaller:
    """A step caller that keeps each service within its limits and its breaker."""

    def __init__(
        self,
        caller: Caller,
        limits: Mapping[str, ServiceLimits],
        *,
        breaker: Callable[[], CircuitBreaker] = CircuitBreaker,
    ) -> None:
        self.caller = caller
        self._slots = {
            name: asyncio.Semaphore(limit.max_concurrency)
            for name, limit in limits.items()
            if limit.max_concurrency is not None
        }
        self._pacers = {
            name: _Pacer(limit.rate_per_s)
            for name, limit in limits.items()
            if limit.rate_per_s is not None
        }
        self._new_breaker = breaker
        self.breakers: dict[str, CircuitBreaker] = {}

    async def call(self, service: str, request: StepRequest, timeout_s: float) -> HttpResponse:
        name = normalize_service_name(service)
        breaker = self.breakers.get(name)
        if breaker is None:
            breaker = self.breakers[name] = self._new_breaker()
        slot = self._slots.get(name)
        if slot is not None:
            async with slot:
                return await self._call(name, service, request, timeout_s, breaker)
        return await self._call(name, service, request, timeout_s, breaker)

    async def _call(
        self,
        name: str,
        service: str,
        request: StepRequest,
        timeout_s: float,
        breaker: CircuitBreaker,
    ) -> HttpResponse:
        if not breaker.allow():
            raise HttpCallError(
                "circuit_open",
                f"service {service}: failing repeatedly; calls paused for up to "
                f"{breaker.open_s:g} s",
                retryable=True,
            )
        pacer = self._pacers.get(name)
        if pacer is not None:
            await pacer.wait()
        try:
            response = await self.caller.call(service, request, timeout_s)
        except HttpCallError as exc:
            breaker.record(ok=exc.reason not in ("connect", "timeout"))
            raise
        except BaseException:
            breaker.release()  # cancelled: it says nothing about the service
            raise
        breaker.record(ok=response.status < 500)
        return response


def _integer(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
