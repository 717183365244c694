"""Prometheus metrics of the HTTP API and the FHIR-store consumer."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "doctorai_fhir_requests_total",
    "FHIR interactions answered, by interaction, resource type and HTTP status",
    ["interaction", "resource_type", "status"],
)
REQUEST_SECONDS = Histogram(
    "doctorai_fhir_request_seconds",
    "Time to answer a FHIR interaction",
    ["interaction"],
)
REPORTS_CREATED = Counter(
    "doctorai_fhir_reports_created_total",
    "DiagnosticReports created from inference results",
)
MESSAGES = Counter(
    "doctorai_fhir_messages_total",
    "Kafka messages handled by the FHIR-store consumer, by topic and outcome",
    ["topic", "outcome"],
)
NOTIFICATIONS = Counter(
    "doctorai_subscription_notifications_total",
    "Subscription notification attempts, by outcome (delivered, failed, dropped)",
    ["outcome"],
)

# Issue 4: the HL7 v2 MLLP listener.
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

# Issue 9: end-to-end latency, from a study's last instance received to its report committed.
E2E_LATENCY = Histogram(
    "doctorai_e2e_latency_seconds",
    "End-to-end latency per model and stage (quiet-period, queue, inference, report, total)",
    ["model", "stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0),
)
