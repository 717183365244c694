"""A destination's circuit breaker: closed, open after the threshold, half-open after the cool-down."""

from prometheus_client import REGISTRY

from integration.outbound.circuit import Circuit


def _gauge() -> float | None:
    return REGISTRY.get_sample_value("doctorai_destination_circuit_open", {"destination": "circuit-test"})


def test_the_circuit_opens_at_the_threshold_and_one_attempt_after_the_cool_down_decides() -> None:
    circuit = Circuit(threshold=2, cool_down=10, destination="circuit-test")
    assert circuit.allows(0) and not circuit.half_open and _gauge() == 0
    circuit.failed(1)
    assert circuit.allows(1) and _gauge() == 0  # one failure in a row: still closed
    circuit.failed(2)
    assert not circuit.allows(11.9) and _gauge() == 1  # open for the cool-down
    assert circuit.allows(12) and circuit.half_open  # then one attempt may go
    circuit.failed(12)  # the probe found nobody: open again, from now
    assert not circuit.allows(21.9) and circuit.allows(22)
    circuit.succeeded()  # the probe reached the peer: closed
    assert circuit.allows(22) and not circuit.half_open and _gauge() == 0
    circuit.failed(23)
    assert circuit.allows(23)  # the count started again
