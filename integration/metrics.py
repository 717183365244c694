"""Prometheus metrics of the pipeline plumbing: outbox, Kafka consumers, dead letters."""

from prometheus_client import Counter, Gauge

OUTBOX_BACKLOG = Gauge("doctorai_outbox_backlog", "Events written but not yet published to Kafka")
OUTBOX_OLDEST_UNSENT = Gauge(
    "doctorai_outbox_oldest_unsent_seconds", "Age of the oldest event waiting in the outbox (0 when empty)"
)
EVENTS_PUBLISHED = Counter("doctorai_outbox_published_total", "Events published from the outbox", ["topic"])
CONSUMER_LAG = Gauge(
    "doctorai_kafka_consumer_lag", "Messages between a consumer group's position and the log end", ["group", "topic"]
)
DEAD_LETTERS = Counter("doctorai_dead_letters_total", "Messages sent to the dead-letter topic", ["source_topic"])

# Outbound deliveries (issue 4: ORU^R01 over MLLP; then FHIR and webhook pushes).
DELIVERIES = Counter(
    "doctorai_outbound_deliveries_total",
    "Outbound delivery attempts by destination and outcome (sent, retry, dead)",
    ["destination", "outcome"],
)

# Issue 7: forwards of studies to DICOM destinations.
FORWARDS = Counter(
    "doctorai_forwards_total",
    "Forward attempts by destination and outcome (sent, retry, dead)",
    ["destination", "outcome"],
)
FORWARDED_INSTANCES = Counter(
    "doctorai_forwarded_instances_total", "Instances a DICOM destination accepted (C-STORE success or warning)", ["destination"]
)
CIRCUIT_OPEN = Gauge(
    "doctorai_destination_circuit_open", "1 while a destination's circuit breaker is open, else 0", ["destination"]
)
