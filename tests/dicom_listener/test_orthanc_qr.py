"""Orthanc (Debian's package) with the listener as one of its modalities: its C-FIND (query), its
C-MOVE to itself (retrieve) and to another AE (move), and its storage commitment requests, each
through Orthanc's REST API. One listener and one Orthanc serve the module."""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from doctorai.stack import StackConfig
from storage.db import session_scope
from storage.peers import Peer, save_peer
from storage.tables.index import Instance
from tests.dicom_listener.conftest import Listener, send, serve
from tests.orthanc import Modality, Orthanc, eventually, start_orthanc

pytestmark = pytest.mark.stack


@dataclass
class Pair:
    listener: Listener
    orthanc: Orthanc
    ct: Dataset
    mr: Dataset


@pytest.fixture(scope="module")
def pair(services: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("orthanc-qr")
    for listener in serve(services, tmp, dicom_commitment_idle_seconds=0.2):
        orthanc = start_orthanc(tmp / "orthanc", aet="ORTHANCQR", modalities={"doctorai": Modality("DOCTORAI", listener.settings.dicom_port)})
        try:
            with session_scope(listener.engine) as session:
                save_peer(
                    session, Peer(ae_title="ORTHANCQR", host="127.0.0.1", port=orthanc.dicom_port, may_find=True, may_move=True, may_get=True)
                )
            ct, mr = (pydicom.dcmread(get_testdata_file(name)) for name in ("CT_small.dcm", "MR_small.dcm"))
            for ds in (ct, mr):
                assert send(listener.settings.dicom_port, ds).Status == 0x0000
            yield Pair(listener, orthanc, ct, mr)
        finally:
            orthanc.stop()


def _post(orthanc: Orthanc, path: str, body: Any) -> Any:
    answer = orthanc.http.post(path, json=body)
    assert answer.status_code == 200, f"{path}: {answer.text}\n{orthanc.log()}"
    return answer.json()


def _data_set(data: bytes) -> bytes:
    return data[144 + int.from_bytes(data[140:144], "little") :]


def _same_bytes(pair: Pair, sop_uid: str) -> bool:
    found = pair.orthanc.find_instance(sop_uid)
    assert found is not None
    with session_scope(pair.listener.engine) as session:
        row = session.get(Instance, sop_uid)
        assert row is not None
        key = row.object_key
    return _data_set(pair.orthanc.instance_file(found)) == _data_set(pair.listener.objects.get_bytes(key))


def test_orthanc_queries_then_retrieves_a_study_to_itself(pair: Pair) -> None:
    query = _post(pair.orthanc, "/modalities/doctorai/query", {"Level": "Study", "Query": {"PatientID": "1CT1", "StudyDescription": ""}})
    answers = pair.orthanc.http.get(f"/queries/{query['ID']}/answers", params={"expand": "", "simplify": ""}).json()
    assert [a["StudyInstanceUID"] for a in answers] == [pair.ct.StudyInstanceUID]
    assert answers[0]["PatientID"] == "1CT1" and answers[0]["RetrieveAETitle"] == "DOCTORAI"
    series = _post(pair.orthanc, "/modalities/doctorai/query", {"Level": "Series", "Query": {"StudyInstanceUID": pair.mr.StudyInstanceUID, "Modality": ""}})
    found = pair.orthanc.http.get(f"/queries/{series['ID']}/answers", params={"expand": "", "simplify": ""}).json()
    assert [(a["SeriesInstanceUID"], a["Modality"]) for a in found] == [(pair.mr.SeriesInstanceUID, "MR")]
    _post(pair.orthanc, f"/queries/{query['ID']}/retrieve", {"TargetAet": "ORTHANCQR", "Synchronous": True})
    assert _same_bytes(pair, pair.ct.SOPInstanceUID)


def test_orthanc_moves_a_series_to_an_ae(pair: Pair) -> None:
    body = {
        "Level": "Series",
        "Resources": [{"StudyInstanceUID": pair.mr.StudyInstanceUID, "SeriesInstanceUID": pair.mr.SeriesInstanceUID}],
        "TargetAet": "ORTHANCQR",
        "Synchronous": True,
    }
    _post(pair.orthanc, "/modalities/doctorai/move", body)
    assert _same_bytes(pair, pair.mr.SOPInstanceUID)
    # To an AE nobody knows: Orthanc reports the C-MOVE failure (0xA801, move destination unknown).
    answer = pair.orthanc.http.post("/modalities/doctorai/move", json={**body, "TargetAet": "NOWHERE"})
    assert answer.status_code != 200 and "A801" in answer.text.upper() + pair.orthanc.log().upper()


def test_orthanc_asks_for_storage_commitment(pair: Pair) -> None:
    instances = [[pair.ct.SOPClassUID, pair.ct.SOPInstanceUID], [pair.mr.SOPClassUID, "1.2.3.404"]]
    asked = _post(pair.orthanc, "/modalities/doctorai/storage-commitment", {"DicomInstances": instances})

    def reported() -> dict[str, Any] | None:
        report: dict[str, Any] = pair.orthanc.http.get(asked["Path"]).json()
        return None if report["Status"] == "Pending" else report

    report = eventually(reported, timeout=30, what="Orthanc's storage commitment report")
    assert report["Status"] == "Failure"
    assert [s["SOPInstanceUID"] for s in report["Success"]] == [pair.ct.SOPInstanceUID]
    assert [(f["SOPInstanceUID"], f["FailureReason"]) for f in report["Failures"]] == [("1.2.3.404", 0x0112)]
