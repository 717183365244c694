"""The traffic benchmarks/faults.py keeps flowing while it injects faults, sent as careful peers send it
(retrying what was not acknowledged), and the count afterwards: every acknowledged instance, message
and resource stored once, every study's report made once, the audit chain intact.
"""

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from benchmarks.fault_stack import MODEL, Stack
from storage.tables.fhir import FhirResource
from storage.tables.hl7 import Hl7Message
from storage.tables.index import Instance, Study
from storage.tables.pipeline import InferenceJob, Report

# Retriable answers (a careful sender tries again): DICOM 0xA7xx "out of resources" and the
# transient association rejection (PS3.4 Annex B.2.3, PS3.8 9.3.4); an HL7 AE (v2.5 2.9.2); HTTP 503/429/502/504.
HTTP_RETRIABLE = {429, 502, 503, 504}
VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"
ROOT = Path(__file__).resolve().parent.parent
ORM = (ROOT / "tests" / "data" / "hl7" / "orm_o01_nw_v23.hl7").read_bytes()
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


@dataclass
class Tally:
    """What the senders sent and had acknowledged, and the answers they got on the way."""

    instances: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> Study Instance UID
    hl7: set[str] = field(default_factory=set)  # acknowledged control ids (MSH-10)
    fhir: set[str] = field(default_factory=set)  # acknowledged Patient identifiers
    retriable: Counter[str] = field(default_factory=Counter)  # door -> retriable answers and cut connections
    refused: Counter[str] = field(default_factory=Counter)  # "door status" -> final refusals of good input
    server_errors: int = 0  # HTTP answers 500 (or 501, 505...) that no sender can know to retry
    lock: threading.Lock = field(default_factory=threading.Lock)


def ct_study(n: int, instances: int = 2) -> list[Dataset]:
    """A CT study of `instances` images (pydicom's CT_small, new UIDs): the seeded rules route CT to MODEL."""
    study, series = generate_uid(), generate_uid()
    out: list[Dataset] = []
    for i in range(instances):
        ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
        ds.PatientID = f"FAULT{n}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        out.append(ds)
    return out


def send_study(port: int, study: list[Dataset], tally: Tally, deadline: float) -> bool:
    """C-STORE every instance until each is acknowledged (retrying after aborts and 0xA7xx), or the deadline."""
    left = list(study)
    while left and time.monotonic() < deadline:
        ae = AE(ae_title="FAULTSCU")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        assoc = ae.associate("127.0.0.1", port, ae_title="DOCTORAI")
        if not assoc.is_established:
            with tally.lock:
                tally.retriable["dicom"] += 1
            time.sleep(0.5)
            continue
        try:
            for ds in list(left):
                status = assoc.send_c_store(ds)
                code = int(status.Status) if "Status" in status else -1
                if code in (0x0000, 0xB000, 0xB007, 0xB006):
                    with tally.lock:
                        tally.instances[ds.SOPInstanceUID] = ds.StudyInstanceUID
                    left.remove(ds)
                elif code == -1 or 0xA700 <= code <= 0xA7FF:
                    with tally.lock:
                        tally.retriable["dicom"] += 1
                    break
                else:
                    with tally.lock:
                        tally.refused[f"dicom {code:04X}"] += 1
                    left.remove(ds)
        finally:
            if assoc.is_established:
                assoc.release()
    return not left


def hl7_order(control_id: str) -> bytes:
    """The ORM^O01 sample with its own control id (MSH-10)."""
    return ORM.replace(b"|ORM0001|", f"|{control_id}|".encode(), 1)


def mllp_exchange(port: int, payload: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes and read one MLLP block back (b"" if the peer closed first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while not data.endswith(FS + CR):
            chunk = sock.recv(65536)
            if not chunk:
                return b""
            data += chunk
    return data


def ack_code(answer: bytes) -> str:
    """MSA-1 of an ACK block ("" when there is none)."""
    for segment in answer.strip(VT + FS + CR).split(CR):
        if segment.startswith(b"MSA|"):
            return segment.split(b"|")[1].decode(errors="replace")
    return ""


def send_order(port: int, control_id: str, tally: Tally, deadline: float) -> bool:
    """Send one order until it is acknowledged AA (an AE or a cut connection is retried)."""
    while time.monotonic() < deadline:
        try:
            code = ack_code(mllp_exchange(port, VT + hl7_order(control_id) + FS + CR))
        except OSError:
            code = ""
        if code in ("AA", "CA"):
            with tally.lock:
                tally.hl7.add(control_id)
            return True
        if code in ("AR", "CR"):
            with tally.lock:
                tally.refused[f"mllp {code}"] += 1
            return False
        with tally.lock:
            tally.retriable["mllp"] += 1
        time.sleep(0.5)
    return False


def send_patient(base: str, token: str, identifier: str, tally: Tally, deadline: float) -> bool:
    """Conditional create of a Patient (If-None-Exist), retried after 5xx-retriable answers and cut connections."""
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:doctorai:faults", "value": identifier}], "gender": "other"}
    headers = {"Authorization": f"Bearer {token}", "If-None-Exist": f"identifier=urn:doctorai:faults|{identifier}",
               "Content-Type": "application/fhir+json"}
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(f"{base}/fhir/Patient", content=json.dumps(body), headers=headers, timeout=30)
            status = answer.status_code
        except httpx.HTTPError:
            status = 0
        if status in (200, 201):
            with tally.lock:
                tally.fhir.add(identifier)
            return True
        if status and status not in HTTP_RETRIABLE:
            with tally.lock:
                tally.refused[f"fhir {status}"] += 1
                tally.server_errors += status >= 500
            return False
        with tally.lock:
            tally.retriable["fhir"] += 1
        time.sleep(0.5)
    return False


def flow(
    stack: Stack, token: str, tally: Tally, *, studies: int, stop: threading.Event, tag: str, deadline: float, pace: float = 0.0
) -> None:
    """Send `studies` CT studies, and an order and a Patient with each, one after the other, a study
    every `pace` seconds at most (until `stop`)."""
    p, began = stack.config.ports, time.monotonic()
    for n in range(studies):
        if stop.wait(max(0.0, began + n * pace - time.monotonic())):
            return
        send_study(p.dicom, ct_study(n), tally, deadline)
        send_order(p.mllp, f"{tag}{n}", tally, deadline)
        send_patient(f"http://127.0.0.1:{p.http}", token, f"{tag}{n}", tally, deadline)


@dataclass
class Count:
    """The count after a run: what was lost or doubled, the reports, the audit chain."""

    lost: int
    duplicated: int
    reports_missing: int
    reports_doubled: int
    audit: str

    def line(self) -> str:
        """The figures as key=value."""
        return (f"lost={self.lost} duplicated={self.duplicated} reports_missing={self.reports_missing} "
                f"reports_doubled={self.reports_doubled} audit={self.audit}")


def _reports(engine: Engine, studies: set[str]) -> tuple[int, int]:
    """(studies without their current report, studies with more than one) for MODEL, at each study's revision."""
    missing = doubled = 0
    with engine.connect() as conn:
        revisions = dict(conn.execute(select(Study.study_uid, Study.revision).where(Study.study_uid.in_(studies))).all())
        rows = conn.execute(
            select(Report.study_uid, Report.revision, func.count())
            .join(InferenceJob, InferenceJob.job_id == Report.job_id)
            .where(Report.study_uid.in_(studies), InferenceJob.model == MODEL)
            .group_by(Report.study_uid, Report.revision)
        ).all()
    made = {(uid, rev): n for uid, rev, n in rows}
    for uid in studies:
        n = made.get((uid, revisions.get(uid, -1)), 0)
        missing += n == 0
        doubled += n > 1
    return missing, doubled


def count(stack: Stack, engine: Engine, tally: Tally, *, drain_seconds: float) -> Count:
    """Wait (up to `drain_seconds`) for every acknowledged study to have its report, then count."""
    studies = set(tally.instances.values())
    deadline = time.monotonic() + drain_seconds
    while True:
        missing, doubled = _reports(engine, studies)
        if missing == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    with engine.connect() as conn:
        stored = set(conn.execute(select(Instance.sop_uid).where(Instance.sop_uid.in_(list(tally.instances)))).scalars())
        accepted = Counter(conn.execute(
            select(Hl7Message.control_id).where(Hl7Message.status == "accepted", Hl7Message.control_id.in_(tally.hl7))
        ).scalars())
        patients: Counter[str] = Counter()
        for content in conn.execute(select(FhirResource.content).where(FhirResource.resource_type == "Patient")).scalars():
            for ident in json.loads(content).get("identifier", []):
                if ident.get("system") == "urn:doctorai:faults":
                    patients[ident.get("value")] += 1
    lost = len(set(tally.instances) - stored) + len(tally.hl7 - set(accepted)) + len(tally.fhir - set(patients))
    # An instance is one index row by its primary key (its object key comes from its UIDs): a double
    # would be an HL7 message accepted twice or a Patient created twice (and reports, counted apart).
    duplicated = sum(n - 1 for n in accepted.values() if n > 1) + sum(n - 1 for n in patients.values() if n > 1)
    return Count(lost, duplicated, missing, doubled, audit_verdict(stack))


def audit_verdict(stack: Stack) -> str:
    """`doctorai audit verify` on the stack's database: "intact" or what it said."""
    done = subprocess.run([sys.executable, "-m", "doctorai.cli", "audit", "verify"], env={**stack.env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=600, check=False, cwd=ROOT)
    out = (done.stdout + done.stderr).strip()
    return "intact" if done.returncode == 0 and "intact" in out else f"BROKEN({out[-200:]})"
