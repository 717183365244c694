"""Query/Retrieve against dcmtk's findscu, movescu (with a storescp as the move destination) and getscu:
every level of both information models, the matching types, cancel, the refusals, and the bytes
of what is retrieved against what was stored. One listener serves the whole module."""

import io
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_FIND_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from sqlalchemy import select

from benchmarks.dicom_scu import read_pdu
from doctorai.stack import StackConfig
from storage.db import session_scope
from storage.peers import Peer, save_peer
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance
from tests.dicom_listener.conftest import Listener, associate_rq, send, serve
from tests.dicom_listener.test_connection import _status as status_of

pytestmark = pytest.mark.stack

MUELLER = "Müller^Jörg"


@dataclass
class Stored:
    """The module's listener and what it holds."""

    listener: Listener
    ct: Dataset  # CT_small as stored, study A
    mr: Dataset  # MR_small, study B
    mueller: list[Dataset]  # two CT instances of one series, study C, a Latin-1 patient name
    tmp: Path

    @property
    def port(self) -> int:
        return self.listener.settings.dicom_port


def listening(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts connections on `port`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mueller(n: int, study: str, series: str) -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = MUELLER, "P-MUELLER"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate, ds.StudyTime, ds.InstanceNumber = "20200315", "101500", n
    ds.ReferringPhysicianName = "Doctor^Who"
    return ds


@pytest.fixture(scope="module")
def stored(services: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stored]:
    tmp = tmp_path_factory.mktemp("qr")
    for listener in serve(services, tmp):
        with session_scope(listener.engine) as session:
            for title in ("FINDSCU", "MOVESCU", "GETSCU", "MODALITY"):
                save_peer(session, Peer(ae_title=title, may_find=True, may_move=True, may_get=True))
            save_peer(session, Peer(ae_title="STORESCU"))  # may send, may not query or retrieve
        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        mr = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        study, series = generate_uid(), generate_uid()
        mueller = [_mueller(n, study, series) for n in (1, 2, 3)]
        for ds in (ct, mr, *mueller):
            assert send(listener.settings.dicom_port, ds, calling="STORESCU").Status == 0x0000
        yield Stored(listener, ct, mr, mueller, tmp)


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60)


def findscu(stored: Stored, model: str, keys: list[str], *extra: str, calling: str = "FINDSCU") -> tuple[list[Dataset], str]:
    """findscu's responses (-X: one file each) and its log."""
    out = stored.tmp / f"find-{generate_uid()}"
    out.mkdir()
    args = ["findscu", "-v", model, "-aet", calling, "-aec", "DOCTORAI", "-X", "-od", out, *extra]
    for key in keys:
        args += ["-k", key]
    done = _run(*args, "127.0.0.1", stored.port)
    responses = [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]
    return responses, done.stdout + done.stderr


def statuses(log: str) -> list[int]:
    """The DIMSE statuses of the responses a dcmtk tool logged with -d, in order."""
    return [int(code, 16) for code in re.findall(r"DIMSE Status\s*: 0x([0-9a-fA-F]{4})", log)]


def _uids(responses: list[Dataset], keyword: str) -> set[str]:
    return {str(r.get(keyword, "")) for r in responses}


def test_study_root_study_level_with_wildcard_range_and_list_of_uids(stored: Stored) -> None:
    mueller = stored.mueller[0]
    every, _ = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"])
    assert _uids(every, "StudyInstanceUID") == {stored.ct.StudyInstanceUID, stored.mr.StudyInstanceUID, mueller.StudyInstanceUID}
    (found,) = [r for r in every if r.StudyInstanceUID == mueller.StudyInstanceUID]
    assert found.PatientName == MUELLER and found.NumberOfStudyRelatedInstances == 3 and found.ModalitiesInStudy == "CT"
    assert found.RetrieveAETitle == "DOCTORAI" and found.QueryRetrieveLevel == "STUDY"
    assert "StudyDescription" not in found  # not asked for, not returned (PS3.4 C.4.1.1.3.2)
    # Wildcard on a name (case-insensitive), and a date range.
    names, _ = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName=compressedsamples*"])
    assert _uids(names, "StudyInstanceUID") == {stored.ct.StudyInstanceUID, stored.mr.StudyInstanceUID}
    dated, _ = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=20040101-20041231", "StudyTime=-1200"])
    assert _uids(dated, "StudyInstanceUID") == {stored.ct.StudyInstanceUID}  # MR_small's study is at 18:50
    listed, _ = findscu(
        stored, "-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={stored.mr.StudyInstanceUID}\\{mueller.StudyInstanceUID}\\1.2.3"]
    )
    assert _uids(listed, "StudyInstanceUID") == {stored.mr.StudyInstanceUID, mueller.StudyInstanceUID}


def test_patient_root_at_every_level(stored: Stored) -> None:
    mueller = stored.mueller[0]
    patients, _ = findscu(stored, "-P", ["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName", "NumberOfPatientRelatedInstances"])
    assert _uids(patients, "PatientID") == {"1CT1", "4MR1", "P-MUELLER"}
    assert {str(p.PatientID): p.NumberOfPatientRelatedInstances for p in patients}["P-MUELLER"] == 3
    studies, _ = findscu(stored, "-P", ["QueryRetrieveLevel=STUDY", "PatientID=P-MUELLER", "StudyInstanceUID", "ReferringPhysicianName"])
    assert [(s.StudyInstanceUID, s.PatientID, s.ReferringPhysicianName) for s in studies] == [
        (mueller.StudyInstanceUID, "P-MUELLER", "Doctor^Who")
    ]
    series, _ = findscu(
        stored,
        "-P",
        ["QueryRetrieveLevel=SERIES", "PatientID=P-MUELLER", f"StudyInstanceUID={mueller.StudyInstanceUID}", "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances"],
    )
    assert [(s.SeriesInstanceUID, s.Modality, s.NumberOfSeriesRelatedInstances) for s in series] == [(mueller.SeriesInstanceUID, "CT", 3)]
    images, _ = findscu(
        stored,
        "-P",
        [
            "QueryRetrieveLevel=IMAGE",
            "PatientID=P-MUELLER",
            f"StudyInstanceUID={mueller.StudyInstanceUID}",
            f"SeriesInstanceUID={mueller.SeriesInstanceUID}",
            "SOPInstanceUID",
            "SOPClassUID",
            "InstanceNumber=2",
        ],
    )
    assert [(i.SOPInstanceUID, i.SOPClassUID, i.InstanceNumber) for i in images] == [
        (stored.mueller[1].SOPInstanceUID, mueller.SOPClassUID, 2)
    ]


def test_a_non_ascii_name_is_matched_and_returned_in_the_request_character_set(stored: Stored) -> None:
    found, _ = findscu(
        stored, "-S", ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 100", "PatientName=MULLER*", "StudyInstanceUID"]
    )
    assert [str(r.PatientName) for r in found] == [MUELLER]  # accent- and case-insensitive
    assert found[0].SpecificCharacterSet == "ISO_IR 100"
    utf8, _ = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192", "PatientName=Mü*", "StudyInstanceUID"])
    assert [str(r.PatientName) for r in utf8] == [MUELLER] and utf8[0].SpecificCharacterSet == "ISO_IR 192"
    # No character set in the request: the default repertoire cannot hold the name, UTF-8 can.
    plain, _ = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "PatientID=P-MUELLER", "PatientName"])
    assert [str(r.PatientName) for r in plain] == [MUELLER] and plain[0].SpecificCharacterSet == "ISO_IR 192"


@pytest.mark.parametrize(("option", "syntax"), [("-xb", "BigEndianExplicit"), ("-xd", "DeflatedLittleEndianExplicit")])
def test_identifiers_travel_in_the_context_transfer_syntax(stored: Stored, option: str, syntax: str) -> None:
    # findscu proposes this syntax first, so we accept it, and decodes our responses in it.
    found, log = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "PatientID=P-MUELLER", "PatientName", "StudyInstanceUID"], option, "-d")
    assert f"Accepted Transfer Syntax: ={syntax}" in log
    assert [str(r.PatientName) for r in found] == [MUELLER]


def test_unsupported_keys_are_left_out_with_a_warning(stored: Stored) -> None:
    found, log = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientComments", "InstitutionName"], "-d")
    assert len(found) == 3 and all("PatientComments" not in r for r in found)
    assert statuses(log) == [0xFF01, 0xFF01, 0xFF01, 0x0000]


def test_an_unknown_level_and_a_refused_peer_get_the_standard_statuses(stored: Stored) -> None:
    _, log = findscu(stored, "-S", ["QueryRetrieveLevel=FRAME", "SOPInstanceUID"], "-d")
    assert statuses(log) == [0xA900]
    _, log = findscu(stored, "-S", ["QueryRetrieveLevel=PATIENT", "PatientID"], "-d")  # no patient level in Study Root
    assert statuses(log) == [0xA900]
    _, log = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "StudyDate=2020-01"], "-d")  # not a date range
    assert statuses(log) == [0xA900]
    for calling in ("STORESCU", "STRANGER"):  # a peer without may_find, and one not in dicom_peers
        _, log = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"], "-d", calling=calling)
        assert statuses(log) == [0xC124]
    with session_scope(stored.listener.engine) as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "dicom-query", AuditEvent.outcome == "4")).all()
    assert {r.agent_who for r in refused} >= {"ae:STORESCU", "ae:STRANGER"}
    # The listener goes on serving.
    again, _ = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])
    assert len(again) == 3


def test_a_cancel_stops_the_responses(stored: Stored) -> None:
    """A C-CANCEL that arrives before the first match is sent gets Cancel (FE00H) and no match (PS3.4 C.4.1.3.1)."""
    find = C_FIND()
    find.MessageID, find.AffectedSOPClassUID, find.Priority = 7, StudyRootQueryRetrieveInformationModelFind, 2
    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.SOPInstanceUID = "IMAGE", ""
    find.Identifier = io.BytesIO(encode(identifier, True, True))
    cancel = C_CANCEL()
    cancel.MessageIDBeingRespondedTo = 7
    pdus = []
    for message, primitive in ((C_FIND_RQ(), find), (C_CANCEL_RQ(), cancel)):
        message.primitive_to_message(primitive)
        for primitive_pdu in message.encode_msg(1, 16384):
            pdu = P_DATA_TF()
            pdu.from_primitive(primitive_pdu)
            pdus.append(pdu.encode())
    with socket.create_connection(("127.0.0.1", stored.port), timeout=10) as sock:
        sock.sendall(associate_rq([build_context(StudyRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian])]))
        assert read_pdu(sock)[0] == 0x02
        sock.sendall(b"".join(pdus))  # the cancel follows the request at once
        pdu_type, body = read_pdu(sock)
        assert pdu_type == 0x04 and status_of(body) == 0xFE00
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
        assert read_pdu(sock)[0] == 0x06


def test_every_query_is_audited_with_identifiers_only(stored: Stored) -> None:
    findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192", "PatientName=Müller*", "PatientID=P-MUELLER", "StudyInstanceUID"])
    with session_scope(stored.listener.engine) as session:
        records = session.scalars(
            select(AuditEvent).where(AuditEvent.subtype == "dicom-query", AuditEvent.entity_what == stored.mueller[0].StudyInstanceUID)
        ).all()
    details = [r.detail for r in records if r.detail["keys"] == "PatientID=P-MUELLER,PatientName,StudyInstanceUID"]
    assert details and details[-1]["via"] == "C-FIND" and details[-1]["patient"] == "P-MUELLER"
    assert not [r for r in records if "ller" in str(r.detail)]  # no name in the trail


def _stored_bytes(stored: Stored, sop_uid: str) -> bytes:
    with session_scope(stored.listener.engine) as session:
        row = session.get(Instance, sop_uid)
        assert row is not None
        key = row.object_key
    return stored.listener.objects.get_bytes(key)


def _data_set(data: bytes) -> bytes:
    """The data set of a DICOM file, past its preamble and file meta."""
    return data[144 + int.from_bytes(data[140:144], "little") :]


@pytest.fixture(scope="module")
def storescp(stored: Stored) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp as the move destination MOVEDEST, writing what it receives bit for bit."""
    port, out = _free_port(), stored.tmp / "moved"
    out.mkdir()
    with session_scope(stored.listener.engine) as session:
        save_peer(session, Peer(ae_title="MOVEDEST", host="127.0.0.1", port=port))
    with (stored.tmp / "storescp.log").open("wb") as log:
        process = subprocess.Popen(["storescp", "-aet", "MOVEDEST", "+B", "-od", str(out), str(port)], stdout=log, stderr=log)
    try:
        listening(port)
        yield port, out
    finally:
        process.terminate()
        process.wait(10)


def retrieve(stored: Stored, tool: str, calling: str, keys: list[str], *extra: str | Path) -> tuple[str, int]:
    """Run movescu or getscu (Study Root, -d) with `keys`; its log and exit code."""
    args: list[str | Path] = [tool, "-d", "-S", "-aet", calling, "-aec", "DOCTORAI", *extra]
    for key in keys:
        args += ["-k", key]
    done = _run(*args, "127.0.0.1", stored.port)
    return done.stdout + done.stderr, done.returncode


def received_bytes(directory: Path) -> dict[str, bytes]:
    """The files a storescp or getscu wrote, by SOP Instance UID."""
    return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p.read_bytes() for p in directory.iterdir()}


def test_movescu_to_a_storescp_sends_the_stored_bytes(stored: Stored, storescp: tuple[int, Path]) -> None:
    _, out = storescp
    mueller = stored.mueller[0]
    log, code = retrieve(stored, "movescu", "MOVESCU", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={mueller.StudyInstanceUID}"], "-aem", "MOVEDEST")
    assert code == 0, log
    received = received_bytes(out)
    assert set(received) == {ds.SOPInstanceUID for ds in stored.mueller}
    for sop_uid, data in received.items():
        assert _data_set(data) == _data_set(_stored_bytes(stored, sop_uid))
    assert statuses(log) == [0xFF00, 0xFF00, 0x0000]  # pending after each sub-operation but the last
    with session_scope(stored.listener.engine) as session:
        (record,) = session.scalars(
            select(AuditEvent).where(AuditEvent.subtype == "instances-retrieved", AuditEvent.entity_what == mueller.StudyInstanceUID)
        ).all()
    assert record.detail["sent"] == "3" and record.detail["destination"] == "MOVEDEST"


def test_an_unknown_move_destination_is_a801_and_the_listener_goes_on(stored: Stored) -> None:
    log, _ = retrieve(stored, "movescu", "MOVESCU", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={stored.ct.StudyInstanceUID}"], "-aem", "NOWHERE")
    assert statuses(log) == [0xA801]
    found, _ = findscu(stored, "-S", ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"])
    assert len(found) == 3


def test_getscu_receives_the_stored_bytes_on_the_same_association(stored: Stored) -> None:
    out = stored.tmp / "got"
    out.mkdir()
    series = ["QueryRetrieveLevel=SERIES", f"SeriesInstanceUID={stored.mueller[0].SeriesInstanceUID}"]
    log, code = retrieve(stored, "getscu", "GETSCU", series, "+B", "-od", out)
    assert code == 0, log
    received = received_bytes(out)
    assert set(received) == {ds.SOPInstanceUID for ds in stored.mueller}
    for sop_uid, data in received.items():
        assert _data_set(data) == _data_set(_stored_bytes(stored, sop_uid))
    assert statuses(log)[-1] == 0x0000
    # An image-level C-GET of a list of two instances, and a peer that may not retrieve.
    two = stored.tmp / "got-two"
    two.mkdir()
    first, second = stored.mueller[0], stored.mueller[2]
    image = [f"SeriesInstanceUID={first.SeriesInstanceUID}", f"SOPInstanceUID={first.SOPInstanceUID}\\{second.SOPInstanceUID}"]
    retrieve(stored, "getscu", "GETSCU", ["QueryRetrieveLevel=IMAGE", *image], "-od", two)
    assert set(received_bytes(two)) == {first.SOPInstanceUID, second.SOPInstanceUID}
    log, _ = retrieve(stored, "getscu", "STORESCU", series, "-od", two)
    assert statuses(log) == [0x0124]
