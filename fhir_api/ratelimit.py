"""Per-client rate limiting: a token bucket for each client, in the API process's memory.

A client is the subject of a valid bearer token, or the peer address for requests without
one. Each replica limits on its own; put the limit of the whole deployment in the load balancer.
"""

import math
import time
from dataclasses import dataclass

# Forget idle clients past this many, so addresses that come and go do not grow the table forever.
_MAX_CLIENTS = 10_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets: `rate` requests per second on average, `burst` at once; state lives with the app."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self._buckets: dict[str, _Bucket] = {}

    def __len__(self) -> int:
        """How many clients the limiter holds state for."""
        return len(self._buckets)

    def wait(self, client: str, now: float | None = None) -> int:
        """Take one request from the client's bucket: 0 when allowed, else whole seconds to wait (Retry-After)."""
        if self.rate <= 0:
            return 0
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= _MAX_CLIENTS:
                self._forget_idle(now)
            bucket = self._buckets[client] = _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, math.ceil((1 - bucket.tokens) / self.rate))

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely carries no state worth keeping.
        full = [k for k, b in self._buckets.items() if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]
