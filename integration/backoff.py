"""The one retry backoff: doubling from a first delay up to a maximum (truncated binary exponential backoff).

Used by the outbound engine (deliveries and forwards), the FHIR subscription deliverer and the
Kafka consumers' retry of a record in place; each keeps its own first and largest delay.
"""

from datetime import timedelta

# 2**30 times any first delay is years: past every maximum, and no float overflow however long
# a subscription endpoint stays down (its notifications are retried until acknowledged).
_MAX_DOUBLINGS = 30


def backoff(failures: int, *, first: float, maximum: float) -> timedelta:
    """The wait after the `failures`-th failure in a row (1 for the first): `first`, doubling, at most `maximum`."""
    doublings = min(max(failures - 1, 0), _MAX_DOUBLINGS)
    return timedelta(seconds=min(first * 2**doublings, maximum))
