"""QIDO-RS at /dicomweb with dicomweb-client as the user agent, and httpx for what a client library
would not send: the six resources, matching, includefield, paging, the answers to bad
parameters, scopes and the audit trail. One API and one index serve the module."""

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from sqlalchemy import select

from storage.db import migrate, session_scope
from storage.instances import StudyDetails, record_instance
from storage.tables.audit import AuditEvent
from tests.fhir_api.conftest import Api, api_on
from tests.studies import received

SEARCH = ["system/ImagingStudy.rs"]


@dataclass
class Qido:
    api: Api
    client: DICOMwebClient

    def get(self, path: str, scopes: list[str] = SEARCH, **params: str) -> httpx.Response:
        return httpx.get(f"{self.api.url}/dicomweb{path}", params=params, headers=self.api.token(scopes))


@pytest.fixture(scope="module")
def qido(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qido]:
    url = f"sqlite:///{tmp_path_factory.mktemp('qido') / 'db.sqlite'}"
    migrate(url)
    for api in api_on(url):
        studies = [
            ("1.2.10", "P1", "Müller^Anna", "20200101", "CT", 2, 3),
            ("1.2.20", "P1", "Müller^Anna", "20210505", "MR", 1, 2),
            ("1.2.30", "P2", "Smith^John", "20220303", "CR", 1, 1),
        ]
        with session_scope(api.engine) as session:
            for uid, patient, name, date, modality, series, instances in studies:
                for s in range(1, series + 1):
                    for i in range(1, instances + 1):
                        details = StudyDetails(patient_name=name, study_time="083000", patient_sex="F")
                        item = received(
                            study_uid=uid,
                            series_uid=f"{uid}.{s}",
                            sop_uid=f"{uid}.{s}.{i}",
                            object_key=f"dicom/{uid}/{uid}.{s}/{uid}.{s}.{i}.dcm",
                            patient_id=patient,
                            study_date=date,
                            modality=modality,
                            series_number=s,
                            instance_number=i,
                            details=details,
                        )
                        record_instance(session, item=item)
        client = DICOMwebClient(url=f"{api.url}/dicomweb", headers=api.token(SEARCH))
        yield Qido(api, client)


def _values(results: list[dict[str, dict[str, list[object]]]], tag: str) -> list[object]:
    return [r[tag]["Value"][0] for r in results if "Value" in r.get(tag, {})]


STUDY_UID, SERIES_UID, SOP_UID, PATIENT_NAME, MODALITY = "0020000D", "0020000E", "00080018", "00100010", "00080060"


def test_all_studies_with_matching_and_default_attributes(qido: Qido) -> None:
    every = qido.client.search_for_studies()
    assert _values(every, STUDY_UID) == ["1.2.10", "1.2.20", "1.2.30"]  # by study date
    first = every[0]
    assert first[PATIENT_NAME]["Value"] == [{"Alphabetic": "Müller^Anna"}] and first["00080061"]["Value"] == ["CT"]
    assert first["00201208"]["Value"] == [6] and first["00201206"]["Value"] == [2]  # instances, series
    assert str(first["00081190"]["Value"][0]).endswith("/dicomweb/studies/1.2.10")  # Retrieve URL (WADO-RS)
    by_name = qido.client.search_for_studies(search_filters={"PatientName": "muller*", "StudyDate": "20210101-"})
    assert _values(by_name, STUDY_UID) == ["1.2.20"]
    listed = qido.client.search_for_studies(search_filters={"StudyInstanceUID": "1.2.10,1.2.30"})
    assert _values(listed, STUDY_UID) == ["1.2.10", "1.2.30"]
    by_tag = qido.get("/studies", **{"00100020": "P2"}).json()
    assert _values(by_tag, STUDY_UID) == ["1.2.30"]
    by_modality = qido.get("/studies", ModalitiesInStudy="MR").json()
    assert _values(by_modality, STUDY_UID) == ["1.2.20"]


def test_series_and_instances_resources(qido: Qido) -> None:
    series = qido.client.search_for_series(study_instance_uid="1.2.10")
    assert _values(series, SERIES_UID) == ["1.2.10.1", "1.2.10.2"]
    assert all(_values([s], STUDY_UID) == ["1.2.10"] for s in series)
    every_series = qido.client.search_for_series(search_filters={"Modality": "C?"})
    assert _values(every_series, SERIES_UID) == ["1.2.10.1", "1.2.10.2", "1.2.30.1"]
    assert PATIENT_NAME in every_series[0]  # All Series carries the study's attributes (10.6.3.3.2)
    instances = qido.client.search_for_instances(study_instance_uid="1.2.10", series_instance_uid="1.2.10.2")
    assert _values(instances, SOP_UID) == ["1.2.10.2.1", "1.2.10.2.2", "1.2.10.2.3"]
    assert PATIENT_NAME not in instances[0] and MODALITY not in instances[0]
    in_study = qido.client.search_for_instances(study_instance_uid="1.2.20")
    assert _values(in_study, SOP_UID) == ["1.2.20.1.1", "1.2.20.1.2"] and MODALITY in in_study[0]
    every = qido.client.search_for_instances(search_filters={"InstanceNumber": "3"})
    assert _values(every, SOP_UID) == ["1.2.10.1.3", "1.2.10.2.3"] and PATIENT_NAME in every[0]


def test_includefield_limit_offset_and_fuzzymatching(qido: Qido) -> None:
    lean = qido.get("/studies", includefield="00081030,StudyTime").json()
    assert "00081030" in lean[0] and lean[0]["00080030"]["Value"] == ["083000"]
    everything = qido.get("/studies", includefield="all").json()
    assert "00081030" in everything[0] and "00100030" in everything[0]
    page = qido.get("/studies", limit="2", offset="1")
    assert _values(page.json(), STUDY_UID) == ["1.2.20", "1.2.30"] and "Warning" not in page.headers
    first = qido.get("/studies", limit="1")
    assert _values(first.json(), STUDY_UID) == ["1.2.10"]
    assert "There are 2 additional results" in first.headers["Warning"]  # PS3.18 8.3.4.4.1
    assert qido.get("/studies", TimezoneOffsetFromUTC="+0100", PatientID="P2").status_code == 200  # ignored
    fuzzy = qido.get("/studies", fuzzymatching="true", PatientID="P2")
    assert fuzzy.status_code == 200 and "fuzzymatching parameter is not supported" in fuzzy.headers["Warning"]


def test_no_match_is_204_and_bad_parameters_are_400(qido: Qido) -> None:
    none = qido.get("/studies", PatientID="NOBODY")
    assert none.status_code == 204 and none.content == b""
    assert qido.client.search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
    for params in (
        {"StudyDate": "2020"},  # not a date
        {"limit": "-1"},
        {"offset": "1" + "0" * 30},
        {"PatientID": "P\x001"},
        {"fuzzymatching": "maybe"},
        {"NoSuchKeyword": "1"},
        {"ffffffff": "1"},
        {"00100020.00100021": "x"},  # sequence matching
        {"SOPInstanceUID": "1.2"},  # an instance attribute on the studies resource
    ):
        answer = qido.get("/studies", **params)
        assert answer.status_code == 400, params
        assert answer.json()["issue"][0]["diagnostics"], params
    assert qido.get("/studies", headers="x").status_code == 400  # an unknown parameter
    assert qido.get("/instances", InstanceNumber="9" * 20).status_code == 400  # out of the range of IS
    not_json = httpx.get(f"{qido.api.url}/dicomweb/studies", headers={**qido.api.token(SEARCH), "Accept": "application/dicom+xml"})
    assert not_json.status_code == 406


def test_scopes_and_the_audit_trail(qido: Qido) -> None:
    assert qido.get("/studies", scopes=["system/DiagnosticReport.rs"]).status_code == 403
    assert qido.get("/studies", scopes=["system/*.rs"]).status_code == 200
    assert httpx.get(f"{qido.api.url}/dicomweb/studies").status_code == 401
    qido.get("/studies", PatientID="P2", PatientName="Smith*")
    with session_scope(qido.api.engine) as session:
        records = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "dicom-query", AuditEvent.entity_what == "1.2.30")).all()
    details = [r.detail for r in records if r.detail["keys"] == "PatientID=P2,PatientName"]
    assert details and details[-1]["via"] == "QIDO-RS" and records[-1].agent_who == "ehr-interface"
    assert not [r for r in records if "Smith" in str(r.detail)]
