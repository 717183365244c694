"""Prometheus metrics of the results consumer."""

from prometheus_client import Counter, Histogram

REPORTS_CREATED = Counter(
    "doctorai_fhir_reports_created_total",
    "DiagnosticReports created from inference results",
)
MESSAGES = Counter(
    "doctorai_fhir_messages_total",
    "Kafka messages handled by the results consumer, by topic and outcome",
    ["topic", "outcome"],
)
# Issue 9: end-to-end latency, from a study's last instance received to its report committed.
E2E_LATENCY = Histogram(
    "doctorai_e2e_latency_seconds",
    "End-to-end latency per model and stage (quiet-period, queue, inference, report, total)",
    ["model", "stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0),
)
