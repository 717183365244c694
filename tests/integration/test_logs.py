"""Log lines carry the correlation id of the work in progress, as text or JSON (issue 9)."""

import io
import json
import logging

from integration.logs import correlated, make_handler


def _logged(log_format: str) -> list[str]:
    stream = io.StringIO()
    logger = logging.getLogger("tests.logs")
    handler = make_handler(log_format, stream)
    logger.addHandler(handler)
    try:
        with correlated("6f1c2d3e-0000-4000-8000-000000000001"):
            logger.warning("handling %s", "a record")
        logger.warning("between records")
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_text_lines_carry_the_correlation_id() -> None:
    inside, outside = _logged("text")
    assert "WARNING tests.logs [6f1c2d3e-0000-4000-8000-000000000001] handling a record" in inside
    assert "[-] between records" in outside


def test_json_lines_carry_the_correlation_id() -> None:
    inside, outside = (json.loads(line) for line in _logged("json"))
    assert inside["correlation_id"] == "6f1c2d3e-0000-4000-8000-000000000001"
    assert inside["message"] == "handling a record" and inside["level"] == "WARNING"
    assert outside["correlation_id"] == "-"
