"""A destination's circuit breaker: after repeated attempts that could not reach it, leave it alone for a while.

Closed: every due item is tried. After `threshold` attempts in a row without a connection (or an
association), open: nothing is tried, and no attempt is spent, for `cool_down` seconds. Then
half-open: one item is tried; reaching the peer closes the circuit, failing opens it again.
"""

from dataclasses import dataclass

from integration import metrics


@dataclass
class Circuit:
    """One destination's breaker state; `destination` names its doctorai_destination_circuit_open gauge."""

    threshold: int
    cool_down: float
    destination: str
    failures: int = 0
    opened_at: float | None = None

    def __post_init__(self) -> None:
        metrics.CIRCUIT_OPEN.labels(self.destination).set(0)

    def allows(self, now: float) -> bool:
        """Whether an attempt may go now: closed, or open long enough to try one (half-open)."""
        return self.opened_at is None or now - self.opened_at >= self.cool_down

    @property
    def half_open(self) -> bool:
        """Open but past its cool-down: one attempt decides."""
        return self.opened_at is not None

    def succeeded(self) -> None:
        """The peer was reached: close."""
        self.failures = 0
        self.opened_at = None
        metrics.CIRCUIT_OPEN.labels(self.destination).set(0)

    def failed(self, now: float) -> None:
        """The peer could not be reached: count it, and open (again) at the threshold."""
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now
            metrics.CIRCUIT_OPEN.labels(self.destination).set(1)


def open_circuits() -> dict[str, list[str]]:
    """The destinations whose circuit is open in this process, from its gauge: the integration
    process's heartbeat carries them to the console (integration/heartbeats.py)."""
    names = [
        sample.labels["destination"]
        for family in metrics.CIRCUIT_OPEN.collect()
        for sample in family.samples
        if sample.value == 1
    ]
    return {"open_circuits": sorted(names)}
