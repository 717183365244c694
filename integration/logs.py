"""One logging setup for every process: the correlation id on every line, as text or JSON.

Whoever works on a study or message sets its correlation id (`correlated`) for that time: the
Kafka consume loop per record, the DICOM C-STORE handler per instance, the MLLP intake per
message. Correlation ids are UUIDs, never PHI.

Logs never carry clinical content (issue 18: a 109 KB warning held raw data-set bytes). The
DICOM libraries put the values they reject into their warnings (pydicom's "Invalid value for VR
UI: '<the value>'"), so their lines keep only the words before the first quote; and no line is longer
than MAX_MESSAGE_CHARS, whatever an exception or a caller put in it.
"""

import json
import logging
import re
import warnings
from pathlib import Path
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

correlation: ContextVar[str] = ContextVar("correlation_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"


MAX_MESSAGE_CHARS = 1024
# Loggers of libraries that quote the data they read in their messages.
_QUOTING = ("pydicom", "pynetdicom")
_QUOTE = re.compile("['\"]")


class _CorrelationFilter(logging.Filter):
    """Puts the current correlation id on every record the handler emits, its message bounded and value-free."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation.get()
        message = record.getMessage()
        quoted = _QUOTE.search(message)
        library = record.name.partition(".")[0] in _QUOTING
        if quoted and library:
            # "Invalid value for VR UI: '...'": they quote the value (repr: ' or "); the words before it stay.
            message = message[: quoted.start()].rstrip(": ")[:200] + " (value withheld)"
        if library:
            # pynetdicom logs the decode errors of a malformed PDU with their traceback, whose
            # lines quote the bytes; our own refusal line says what was refused and why.
            record.exc_info, record.exc_text = None, None
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[:MAX_MESSAGE_CHARS]}... ({len(message) - MAX_MESSAGE_CHARS} characters cut)"
        record.msg, record.args = message, None
        return True


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (Loki, Elasticsearch)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "correlation_id": getattr(record, "correlation_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def make_handler(log_format: str, stream: TextIO | None = None, *, path: Path | None = None) -> logging.Handler:
    """A handler writing to `stream` (stderr), or appending to the file at `path`, as text or JSON,
    every record with its correlation id."""
    # A file handler opens its file at the first record and logging closes it at exit.
    handler: logging.Handler = logging.FileHandler(path, delay=True) if path else logging.StreamHandler(stream)
    handler.addFilter(_CorrelationFilter())
    handler.setFormatter(_JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def setup_logging(log_format: str, level: int = logging.INFO) -> None:
    """Log to stderr as text or JSON (DOCTORAI_LOG_FORMAT, IntegrationSettings.log_format), with correlation ids."""
    logging.basicConfig(level=level, handlers=[make_handler(log_format)], force=True)
    # pydicom says each value it rejects twice: as a log line (withheld above) and as a Python
    # warning printed to stderr with the value in it. The log line is enough.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\..*)?$")


@contextmanager
def correlated(correlation_id: str) -> Iterator[None]:
    """Log under this correlation id until the block ends."""
    token = correlation.set(correlation_id or "-")
    try:
        yield
    finally:
        correlation.reset(token)
