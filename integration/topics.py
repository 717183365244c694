"""Topic names (DESIGN.md section 6), without the deployment prefix that `qualified` adds."""

STUDY_READY = "study.ready"
HL7_RECEIVED = "hl7.received"
FHIR_RECEIVED = "fhir.received"
INFERENCE_RESULT = "inference.result"
DLQ = "dlq"


def inference_request(model: str) -> str:
    """The topic a model's workers consume."""
    return f"inference.request.{model}"


def outbound(destination: str) -> str:
    """The queue of one outbound destination."""
    return f"outbound.{destination}"


def qualified(prefix: str, name: str) -> str:
    """The name on the broker."""
    return f"{prefix}{name}"


def consumer_group_for_model(model: str) -> str:
    """The consumer group of a model's workers: two workers split its partitions."""
    return f"doctorai-infer-{model}"
