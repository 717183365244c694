"""Prometheus metrics of the HTTP API and the subscription deliverer."""

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
NOTIFICATIONS = Counter(
    "doctorai_subscription_notifications_total",
    "Subscription notification attempts, by outcome (delivered, failed, dropped)",
    ["outcome"],
)
