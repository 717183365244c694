"""The `doctorai` command as a user runs it (a subprocess): every error is one line on stderr and a
non-zero exit, every change says what it did, and the HL7 tools find messages by control id."""

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.db import make_engine, migrate, session_scope
from storage.tables.hl7 import Hl7Message
from tests.mllp_peers import receiver, segment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "hl7"

class Cli:
    """Runs `doctorai ARGS` on a migrated SQLite database of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'doctorai.db'}"
        migrate(self.url)
        self.cwd = tmp_path
        self.env = {**os.environ, "DOCTORAI_VAR_DIR": str(tmp_path / "var"), "DOCTORAI_DATABASE_URL": self.url}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The finished process."""
        argv = [sys.executable, "-m", "doctorai.cli", *args]
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120, cwd=self.cwd)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def one_line_error(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Assert the command failed with one line on stderr naming `expected`; that line."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_missing_key_file_is_one_line_not_a_traceback(cli: Cli) -> None:
    done = cli("clients", "add", "epic", "--scope", "system/DiagnosticReport.rs", "--public-key", "missing.pem")
    line = one_line_error(done, "doctorai clients add", "No such file or directory", "missing.pem")
    assert line.startswith("doctorai clients add: ")
    one_line_error(cli("clients", "add", "ris", "--scope", "read-everything"), "not SMART system scopes")
    one_line_error(cli("clients", "add", "x", "--scope", "system/*.rs", "--jwks", "missing.json"), "missing.json")


def test_a_usage_error_is_one_line_too(cli: Cli) -> None:
    done = cli("clients", "add", "ris")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("doctorai clients add: the following arguments are required: --scope")


def test_refusals_and_unreachable_services_are_one_line(cli: Cli, tmp_path: Path) -> None:
    one_line_error(cli("models", "add"), "give PATH or --builtin NAME")
    one_line_error(cli("models", "activate", "nothing", "1"), "nothing 1 is not registered")
    one_line_error(cli("studies", "release", "1.2.3"), "doctorai studies release", "1.2.3")
    one_line_error(cli("peers", "remove", "NOBODY"), "no peer NOBODY")
    one_line_error(cli("clients", "remove", "nobody"), "no client nobody")
    # Nothing listens on port 1: the connection is refused.
    one_line_error(cli("hl7", "send", str(EXAMPLES / "adt_a04.hl7"), "--port", "1"), "doctorai hl7 send")
    not_hl7 = tmp_path / "not.hl7"
    not_hl7.write_text("hello\n")
    one_line_error(cli("hl7", "send", str(not_hl7), "--port", "1"), "MSH")


# `doctorai peers list` with a bug planted in it.
BROKEN = """
import sys
import doctorai.cli.peers

def broken(_args):
    raise KeyError("a bug")

doctorai.cli.peers.peers = broken
from doctorai.cli import main
sys.exit(main(["peers", "list"]))
"""


def test_an_unexpected_error_is_one_line_pointing_to_its_traceback(cli: Cli, tmp_path: Path) -> None:
    """A bug is still one line; its traceback goes to <var>/logs/cli.log, which the line names."""
    done = subprocess.run([sys.executable, "-c", BROKEN], env=cli.env, capture_output=True, text=True, timeout=120)
    log = tmp_path / "var" / "logs" / "cli.log"
    line = one_line_error(done)
    assert line == f"doctorai peers list: unexpected error KeyError: 'a bug'; the traceback is in {log}"
    assert "Traceback" in log.read_text() and "a bug" in log.read_text()


def test_changes_say_what_they_did(cli: Cli) -> None:
    assert cli("peers", "add", "CT_ROOM1", "--quiet-period", "30").stdout == "peer CT_ROOM1 saved\n"
    assert cli("peers", "remove", "CT_ROOM1").stdout == "peer CT_ROOM1 removed\n"
    added = cli("clients", "add", "ris", "--scope", "system/*.cruds")
    assert added.returncode == 0 and added.stdout.startswith("client_id=ris\nclient_secret=")
    assert cli("clients", "remove", "ris").stdout == "client ris removed\n"


def _message(engine_url: str, *, message_id: str, control_id: str, application: str, unmapped: dict[str, str]) -> None:
    engine = make_engine(engine_url)
    with session_scope(engine) as session:
        session.add(
            Hl7Message(
                id=message_id, correlation_id=str(uuid.uuid4()), sender_application=application,
                sender_facility="HOSP", source_address="127.0.0.1", control_id=control_id, message_type="ADT",
                trigger_event="A04", version="2.5", received_at=datetime.now(UTC), object_key="k", size=1,
                status="accepted", ack_code="AA", error="", unmapped=unmapped,
                dedupe_key=f"{application}|HOSP|{control_id}",
            )
        )
    engine.dispose()


def test_unmapped_fields_by_control_id_and_sender(cli: Cli) -> None:
    url = cli.url
    _message(url, message_id=str(uuid.uuid4()), control_id="MSG1", application="EHR", unmapped={"PID[1]-19": "x"})
    by_id = str(uuid.uuid4())
    _message(url, message_id=by_id, control_id="MSG2", application="EHR", unmapped={"PV1[1]-44": "y"})
    _message(url, message_id=str(uuid.uuid4()), control_id="MSG2", application="LAB", unmapped={"OBX[1]-5": "z"})

    assert '"PID[1]-19": "x"' in cli("hl7", "unmapped", "MSG1").stdout
    assert '"PV1[1]-44": "y"' in cli("hl7", "unmapped", by_id).stdout  # the internal id still works
    one_line_error(cli("hl7", "unmapped", "MSG2"), "control id MSG2 came from", "EHR^HOSP", "LAB^HOSP")
    assert '"OBX[1]-5": "z"' in cli("hl7", "unmapped", "MSG2", "--sender", "LAB").stdout
    assert '"PV1[1]-44": "y"' in cli("hl7", "unmapped", "MSG2", "--sender", "EHR^HOSP").stdout
    one_line_error(cli("hl7", "unmapped", "MSG3"), "no HL7 message with id or control id MSG3")


def test_hl7_send_frames_each_message_and_reports_its_acknowledgement(cli: Cli) -> None:
    files = [str(EXAMPLES / "adt_a04.hl7"), str(EXAMPLES / "orm_o01.hl7")]
    with receiver() as peer:
        done = cli("hl7", "send", *files, "--port", str(peer.port))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{files[0]}: EXADT0001 AA", f"{files[1]}: EXORM0001 AA"]
    # Segments end in CR on the wire whatever the file's line ends (HL7 v2 2.5.3).
    assert [segment(m, "MSH")[9] for m in peer.received] == ["EXADT0001", "EXORM0001"]
    assert all(b"\n" not in m and m.endswith(b"\r") for m in peer.received)

    with receiver(lambda message: "AR") as refusing:
        refused = cli("hl7", "send", files[0], "--port", str(refusing.port))
    assert refused.returncode == 1 and refused.stdout == f"{files[0]}: EXADT0001 AR\n"
