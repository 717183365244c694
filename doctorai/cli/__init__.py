"""The `doctorai` command, one module per command group: `up`/`init` start the local stack or prepare
real services (up.py), `token` and `clients` (api.py), `peers`, `models`, `studies`, `index`,
`destinations`/`deliveries`/`hl7` (hl7.py), `audit` and `users` (people who sign in to the console).

This is a composition root like a `__main__`: it may reach into every package. Each command imports
what it needs when it runs, so `doctorai token` does not load the inference frameworks.

`main` is the command's edge: every error becomes one line on stderr and exit status 1 (a usage
error exits 2), never a traceback. Commands that change something print one line saying what
they did.
"""

import argparse
import logging
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from doctorai.cli import api, audit, hl7, index, models, peers, studies, up, users
from doctorai.supervisor import StackError
from fhir_api.errors import FhirError
from inference.errors import InferenceError
from integration.errors import PipelineError
from integration.config import get_settings as get_integration_settings
from integration.logs import make_handler, setup_logging
from storage.config import ProductionConfigError
from storage.config import get_settings as get_storage_settings
from storage.errors import StorageError

# Errors a command can meet in normal use (a file that is not there, a refused change, a database
# that does not answer): the message says it all. Anything else is a bug: its traceback goes to a file.
EXPECTED = (
    PipelineError,
    StorageError,
    InferenceError,
    FhirError,
    StackError,
    ProductionConfigError,
    SQLAlchemyError,
    OSError,
    ValueError,  # pydantic's ValidationError among them
)


def describe(exc: BaseException) -> str:
    """An error as one line: the file an OSError is about, each field pydantic refused, the driver's first line."""
    if isinstance(exc, ValidationError):
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    elif isinstance(exc, SQLAlchemyError):
        orig = getattr(exc, "orig", None)
        text = f"database error: {orig if orig is not None else exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _cli_log() -> Path:
    """Where commands other than `up` log, and where tracebacks of unexpected errors go."""
    return get_storage_settings().var_dir.resolve() / "logs" / "cli.log"


def _setup_logging(command: str) -> None:
    """`up` logs the stack's progress to the console; other commands log to the CLI log, so stderr
    carries only their one-line errors (a library's retries would otherwise come before it)."""
    if command == "up":
        setup_logging(get_integration_settings().log_format)
        return
    path = _cli_log()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = make_handler(get_integration_settings().log_format, path=path)
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def _log_traceback(command: str, exc: BaseException) -> Path | None:
    """Append the traceback of an unexpected error to the CLI log; where it went, or None."""
    try:
        path = _cli_log()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.write(f"{datetime.now(UTC).isoformat()} doctorai {command}\n")
            out.write("".join(traceback.format_exception(exc)))
        return path
    except (OSError, ValueError):
        return None


class Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line too (exit status 2); the usage itself is in --help."""

    def error(self, message: str) -> NoReturn:
        """Print `prog: message` and exit 2 (subcommand parsers are of this class too)."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand; errors as one line on stderr and exit status 1."""
    parser = Parser(prog="doctorai", description="DoctorAI integration engine")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (up, audit, hl7, api, peers, models, studies, index, users):
        group.add_parser(sub)
    args = parser.parse_args(argv)
    command = " ".join(str(v) for k, v in vars(args).items() if k in ("command", "action") or k.endswith("_command"))
    try:
        _setup_logging(args.command)
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except EXPECTED as exc:
        print(f"doctorai {command}: {describe(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # the edge: a bug shows as one line and a traceback in the CLI log
        where = _log_traceback(command, exc)
        hint = f"; the traceback is in {where}" if where else ""
        print(f"doctorai {command}: unexpected error {type(exc).__name__}: {describe(exc)}{hint}", file=sys.stderr)
        return 1
