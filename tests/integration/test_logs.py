"""Log lines carry the correlation id of the work in progress, as text or JSON (issue 9)."""

import io
import json
import logging
import warnings

import pydicom.valuerep
import pytest
from pydicom import config

from integration.logs import MAX_MESSAGE_CHARS, correlated, make_handler, setup_logging


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


def test_lines_are_bounded_and_library_lines_keep_no_values() -> None:
    """Issue 18: a 109 KB warning held raw data-set bytes; logs never carry clinical content."""
    stream = io.StringIO()
    handler = make_handler("text", stream)
    ours, pydicom_logger = logging.getLogger("tests.logs"), logging.getLogger("pydicom")
    ours.addHandler(handler)
    pydicom_logger.addHandler(handler)
    try:
        pydicom_logger.warning("Invalid value for VR PN: 'DOE^JANE%s'. Please see the standard", "x" * 100000)
        pydicom_logger.warning("Invalid value for VR PN: \"O'DOE^JANE\"")
        ours.warning("refused: %r", b"DOE^JANE" * 20000)
    finally:
        ours.removeHandler(handler)
        pydicom_logger.removeHandler(handler)
    library, quoting, own = stream.getvalue().splitlines()
    assert library.endswith("Invalid value for VR PN (value withheld)") and "DOE" not in library
    assert quoting.endswith("Invalid value for VR PN (value withheld)") and "DOE" not in quoting
    assert len(own) < MAX_MESSAGE_CHARS + 200 and own.endswith("characters cut)")


def test_library_tracebacks_and_warnings_keep_no_values(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 18 (the fault harness's fuzzing): pynetdicom logged each malformed A-ASSOCIATE-RQ's decode
    error with a traceback, and pydicom printed every rejected value again as a Python warning."""
    stream = io.StringIO()
    handler = make_handler("text", stream)
    library = logging.getLogger("pynetdicom.utils")
    library.addHandler(handler)
    try:
        try:
            b"DOE^JANE\x9b".decode("ascii")
        except UnicodeDecodeError:
            library.exception("")
    finally:
        library.removeHandler(handler)
    assert "Traceback" not in stream.getvalue() and "DOE" not in stream.getvalue()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with warnings.catch_warnings():
            setup_logging("text")
            pydicom.valuerep.validate_value("UI", "1.2.3\x00DOE^JANE", config.WARN)
    finally:
        for added in root.handlers[:]:
            root.removeHandler(added)
        for kept in handlers:
            root.addHandler(kept)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "Invalid value for VR UI (value withheld)" in err and "DOE" not in err
