"""Prometheus metrics of the HL7 v2 MLLP listener."""

from prometheus_client import Counter, Histogram

HL7_MESSAGES = Counter(
    "doctorai_hl7_messages_total",
    "HL7 v2 messages answered, by message type and acknowledgement code",
    ["message_type", "ack"],
)
HL7_ACK_SECONDS = Histogram(
    "doctorai_hl7_ack_seconds",
    "Time from a whole MLLP block received to its ACK written (stored, committed, mapped)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HL7_CONNECTIONS = Counter("doctorai_hl7_connections_total", "MLLP connections by outcome", ["outcome"])
HL7_FRAMING_ERRORS = Counter("doctorai_hl7_framing_errors_total", "MLLP byte runs that were not a block", ["kind"])

