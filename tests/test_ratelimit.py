"""Token buckets: refill arithmetic, per-client limiting, bounded memory, Retry-After."""

from __future__ import annotations

import pytest

from blobflow.api.ratelimit import Bucket, RateLimiter, Verdict, retry_after_header, take


class FakeClock:
    """A clock the test moves by hand, so refill is exact and nothing sleeps."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _allowed(limit: int, remaining: int) -> Verdict:
    return Verdict(allowed=True, limit=limit, remaining=remaining, retry_after_s=0.0)


def _denied(limit: int, retry_after_s: float) -> Verdict:
    return Verdict(allowed=False, limit=limit, remaining=0, retry_after_s=retry_after_s)


# ---------------------------------------------------------------- take


@pytest.mark.parametrize(
    ("bucket", "now_s", "rate_per_s", "burst", "expected_bucket", "expected_verdict"),
    [
        pytest.param(None, 100.0, 1.0, 5, Bucket(4.0, 100.0), _allowed(5, 4), id="fresh-full"),
        pytest.param(None, 0.0, 1.0, 1, Bucket(0.0, 0.0), _allowed(1, 0), id="fresh-burst-1"),
        pytest.param(
            Bucket(1.0, 10.0), 10.0, 1.0, 5, Bucket(0.0, 10.0), _allowed(5, 0), id="last-token"
        ),
        pytest.param(
            Bucket(0.0, 10.0), 11.5, 1.0, 5, Bucket(0.5, 11.5), _allowed(5, 0), id="refill-partial"
        ),
        pytest.param(
            Bucket(1.0, 10.0), 12.0, 2.0, 10, Bucket(4.0, 12.0), _allowed(10, 4), id="refill-more"
        ),
        pytest.param(
            Bucket(0.0, 0.0), 1000.0, 1.0, 3, Bucket(2.0, 1000.0), _allowed(3, 2), id="cap-at-burst"
        ),
        pytest.param(
            Bucket(3.0, 0.0), 5.0, 1.0, 3, Bucket(2.0, 5.0), _allowed(3, 2), id="full-stays-capped"
        ),
        pytest.param(
            Bucket(0.0, 10.0), 10.0, 2.0, 5, Bucket(0.0, 10.0), _denied(5, 0.5), id="empty-denied"
        ),
        pytest.param(
            Bucket(0.25, 10.0), 10.0, 1.0, 5, Bucket(0.25, 10.0), _denied(5, 0.75), id="part-token"
        ),
        pytest.param(
            Bucket(0.0, 10.0), 11.0, 0.5, 2, Bucket(0.5, 11.0), _denied(2, 1.0), id="half-rate-1s"
        ),
        pytest.param(
            Bucket(0.0, 10.0), 12.0, 0.5, 2, Bucket(0.0, 12.0), _allowed(2, 0), id="half-rate-2s"
        ),
        pytest.param(
            Bucket(0.0, 10.0), 10.0, 0.25, 1, Bucket(0.0, 10.0), _denied(1, 4.0), id="quarter-rate"
        ),
        pytest.param(
            Bucket(0.0, 10.0), 5.0, 1.0, 5, Bucket(0.0, 10.0), _denied(5, 1.0), id="backwards-empty"
        ),
        pytest.param(
            Bucket(2.0, 10.0), 5.0, 1.0, 5, Bucket(1.0, 10.0), _allowed(5, 1), id="backwards-tokens"
        ),
    ],
)
def test_take(
    bucket: Bucket | None,
    now_s: float,
    rate_per_s: float,
    burst: int,
    expected_bucket: Bucket,
    expected_verdict: Verdict,
) -> None:
    assert take(bucket, now_s, rate_per_s=rate_per_s, burst=burst) == (
        expected_bucket,
        expected_verdict,
    )


def test_take_backwards_clock_does_not_refill_twice() -> None:
    bucket, _ = take(Bucket(0.0, 10.0), 5.0, rate_per_s=1.0, burst=10)
    # One second past the latest time seen, not six past the time the clock jumped back to.
    bucket, verdict = take(bucket, 11.0, rate_per_s=1.0, burst=10)
    assert bucket == Bucket(0.0, 11.0)
    assert verdict == _allowed(10, 0)


@pytest.mark.parametrize("rate_per_s", [0.1, 0.3, 3.0, 7.0, 1 / 3, 1000.0])
def test_take_after_waiting_retry_after_is_allowed(rate_per_s: float) -> None:
    bucket, _ = take(None, 0.0, rate_per_s=rate_per_s, burst=1)
    bucket, denied = take(bucket, 0.0, rate_per_s=rate_per_s, burst=1)
    assert not denied.allowed
    _, verdict = take(bucket, denied.retry_after_s, rate_per_s=rate_per_s, burst=1)
    assert verdict == _allowed(1, 0)


@pytest.mark.parametrize(
    ("rate_per_s", "burst"),
    [
        pytest.param(0.0, 1, id="zero-rate"),
        pytest.param(-1.0, 1, id="negative-rate"),
        pytest.param(float("nan"), 1, id="nan-rate"),
        pytest.param(float("inf"), 1, id="inf-rate"),
        pytest.param(1.0, 0, id="zero-burst"),
    ],
)
def test_invalid_parameters(rate_per_s: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate_per_s"):
        take(None, 0.0, rate_per_s=rate_per_s, burst=burst)
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(rate_per_s, burst)


def test_invalid_max_clients() -> None:
    with pytest.raises(ValueError, match="max_clients"):
        RateLimiter(1.0, 1, max_clients=0)


# ---------------------------------------------------------------- RateLimiter


def test_clients_are_independent() -> None:
    limiter = RateLimiter(1.0, 2, clock=FakeClock())
    assert [limiter.check("a").allowed for _ in range(3)] == [True, True, False]
    assert limiter.check("b") == _allowed(2, 1)
    assert not limiter.check("a").allowed


def test_burst_then_denial_then_recovery() -> None:
    clock = FakeClock(50.0)
    limiter = RateLimiter(1.0, 3, clock=clock)
    assert [limiter.check("a").allowed for _ in range(3)] == [True, True, True]
    assert limiter.check("a") == _denied(3, 1.0)
    clock.now += 0.5
    assert limiter.check("a") == _denied(3, 0.5)
    clock.now += 0.5
    assert limiter.check("a") == _allowed(3, 0)
    assert limiter.check("a") == _denied(3, 1.0)
    clock.now += 10.0
    assert limiter.check("a") == _allowed(3, 2)


def test_remaining_counts_down() -> None:
    limiter = RateLimiter(1.0, 5, clock=FakeClock())
    verdicts = [limiter.check("a") for _ in range(6)]
    assert [v.remaining for v in verdicts] == [4, 3, 2, 1, 0, 0]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert {v.limit for v in verdicts} == {5}


def test_memory_bound_with_many_clients() -> None:
    limiter = RateLimiter(0.001, 1, clock=FakeClock(), max_clients=10)
    for i in range(1000):
        assert limiter.check(f"client-{i}").allowed
        assert len(limiter) <= 10
    assert len(limiter) == 10
    # The most recent clients are still remembered, so they stay limited.
    assert not limiter.check("client-999").allowed
    assert not limiter.check("client-990").allowed


def test_least_recently_used_is_forgotten() -> None:
    limiter = RateLimiter(0.001, 1, clock=FakeClock(), max_clients=2)
    for client in ["a", "b", "a", "c"]:
        limiter.check(client)
    assert len(limiter) == 2
    # "a" was used after "b", so it is remembered; "b" was forgotten and starts over full.
    assert not limiter.check("a").allowed
    assert limiter.check("b").allowed


def test_idle_buckets_are_forgotten_without_hitting_the_bound() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, 2, clock=clock)  # full again after 2 s idle
    for i in range(1000):
        limiter.check(f"client-{i}")
        clock.now += 1.0
        assert len(limiter) <= 3


def test_forgetting_idle_buckets_does_not_change_verdicts() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, 2, clock=clock)
    reference: dict[str, Bucket] = {}
    for i in range(500):
        client = f"client-{i * 7 % 13}"
        reference[client], expected = take(
            reference.get(client), clock.now, rate_per_s=1.0, burst=2
        )
        assert limiter.check(client) == expected
        clock.now += 0.3
    assert len(limiter) < len(reference)


def test_default_clock() -> None:
    limiter = RateLimiter(1.0, 1)
    assert limiter.check("a") == _allowed(1, 0)
    assert len(limiter) == 1


# ---------------------------------------------------------------- retry_after_header


@pytest.mark.parametrize(
    ("retry_after_s", "expected"),
    [
        pytest.param(0.0, "1", id="allowed-zero"),
        pytest.param(0.001, "1", id="tiny"),
        pytest.param(0.5, "1", id="half"),
        pytest.param(1.0, "1", id="exact-one"),
        pytest.param(1.0001, "2", id="just-over-one"),
        pytest.param(2.5, "3", id="fraction-up"),
        pytest.param(59.99, "60", id="almost-minute"),
        pytest.param(120.0, "120", id="whole"),
    ],
)
def test_retry_after_header(retry_after_s: float, expected: str) -> None:
    verdict = Verdict(allowed=False, limit=1, remaining=0, retry_after_s=retry_after_s)
    assert retry_after_header(verdict) == expected
