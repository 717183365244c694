"""Token buckets per client."""

from fhir_api.ratelimit import RateLimiter


def test_burst_then_rate_then_retry_after() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.wait("a", now=0.0) for _ in range(3)] == [0, 0, 0]
    assert limiter.wait("a", now=0.0) == 1  # empty: half a second to the next token, rounded up
    assert limiter.wait("b", now=0.0) == 0  # another client has its own bucket
    assert limiter.wait("a", now=0.5) == 0  # refilled one
    assert limiter.wait("a", now=0.5) == 1
    assert [limiter.wait("a", now=100.0) for _ in range(3)] == [0, 0, 0]  # never above the burst


def test_off_and_many_clients() -> None:
    assert all(RateLimiter(rate=0, burst=1).wait("a", now=0.0) == 0 for _ in range(10))
    limiter = RateLimiter(rate=1.0, burst=1)
    for i in range(10_050):
        limiter.wait(f"client-{i}", now=float(i))
    assert len(limiter) <= 10_000
