"""Per-client token buckets, so that one noisy client cannot starve the API for everyone else.

A bucket allows short bursts (up to `burst` requests at once) while holding the long-run
average to `rate_per_s`. The arithmetic is a pure function of (bucket, now) so that it can be
tested without sleeping; `RateLimiter` only adds the clock and a bounded memory of clients,
because client keys come from the network and an unbounded dict is a memory leak on demand.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# Refill is float arithmetic, so waiting exactly `retry_after_s` can leave a bucket at
# 0.9999999999 tokens; without this slack the client that did as told would be refused again.
_EPSILON_TOKENS = 1e-9
# Idle buckets forgotten per call at most: more than the one a call can add, so they drain,
# and a constant, so no single request pays for a sweep of every client.
_SWEEP_PER_CALL = 2


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    updated_s: float


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int  # the burst (bucket capacity), for a RateLimit-Limit header
    remaining: int  # whole tokens left after this request (floor, >= 0)
    retry_after_s: float  # 0.0 when allowed; else seconds until one token is available


def _check_params(rate_per_s: float, burst: int) -> None:
    # An infinite or NaN rate would turn refill into NaN tokens, which compare false with
    # everything and so would deny (or allow) forever without an error.
    if not (math.isfinite(rate_per_s) and rate_per_s > 0) or burst < 1:
        raise ValueError(f"need a finite rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")


def take(
    bucket: Bucket | None, now_s: float, *, rate_per_s: float, burst: int
) -> tuple[Bucket, Verdict]:
    """Refill by elapsed time (capped at burst), then take one token if there is one.

    A missing bucket starts full. A clock going backwards refills nothing.
    """
    _check_params(rate_per_s, burst)
    if bucket is None:
        tokens, updated_s = float(burst), now_s
    else:
        elapsed_s = max(now_s - bucket.updated_s, 0.0)
        tokens = min(bucket.tokens + elapsed_s * rate_per_s, float(burst))
        # Keep the later time: were it moved back, the same interval would be refilled twice
        # once the clock caught up again.
        updated_s = max(bucket.updated_s, now_s)
    if tokens >= 1.0 - _EPSILON_TOKENS:
        tokens = max(tokens - 1.0, 0.0)
        verdict = Verdict(True, burst, math.floor(tokens + _EPSILON_TOKENS), 0.0)
    else:
        verdict = Verdict(False, burst, 0, (1.0 - tokens) / rate_per_s)
    return Bucket(tokens, updated_s), verdict


def retry_after_header(verdict: Verdict) -> str:
    """`Retry-After` in whole seconds, rounded up so a client that obeys it is not refused."""
    # At least 1: "0" invites an immediate retry loop, and the header is only sent on a denial.
    return str(max(math.ceil(verdict.retry_after_s), 1))


class RateLimiter:
    """Token buckets keyed by client, with memory bounded by `max_clients`."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 100_000,
    ) -> None:
        _check_params(rate_per_s, burst)
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self._rate_per_s = rate_per_s
        self._burst = burst
        self._clock = clock
        self._max_clients = max_clients
        # After this long any bucket is full again, the same as a missing one, so forgetting
        # it loses nothing.
        self._idle_s = burst / rate_per_s
        # Least recently used first; with a monotonic clock that is also oldest `updated_s`
        # first, so idle buckets collect at the front and eviction never needs a scan.
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def check(self, client: str) -> Verdict:
        now_s = self._clock()
        bucket, verdict = take(
            self._buckets.get(client), now_s, rate_per_s=self._rate_per_s, burst=self._burst
        )
        self._buckets[client] = bucket
        self._buckets.move_to_end(client)
        self._forget(now_s)
        return verdict

    def __len__(self) -> int:
        return len(self._buckets)

    def _forget(self, now_s: float) -> None:
        for _ in range(_SWEEP_PER_CALL):
            oldest = next(iter(self._buckets.values()))
            if now_s - oldest.updated_s < self._idle_s:
                break
            self._buckets.popitem(last=False)
        # Still too many means nothing at the front is idle: the least recently used goes.
        # The client just served is at the end, and max_clients >= 1, so it stays.
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
