"""The one retry backoff of the outbound engine, the subscription deliverer and the Kafka consumers."""

from datetime import timedelta

from integration.backoff import backoff


def test_the_wait_doubles_from_the_first_delay_up_to_the_maximum() -> None:
    waits = [backoff(n, first=0.5, maximum=30).total_seconds() for n in range(1, 10)]
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_any_count_of_failures_has_a_wait() -> None:
    # Subscription notifications are retried until acknowledged: the count has no upper bound.
    assert backoff(100_000, first=5, maximum=1800) == timedelta(seconds=1800)
    assert backoff(0, first=5, maximum=1800) == backoff(1, first=5, maximum=1800) == timedelta(seconds=5)
