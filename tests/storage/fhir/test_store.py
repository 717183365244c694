"""The FHIR store: versions, history and the search index."""

from sqlalchemy import Engine, select

from storage import fhir
from storage.fhir import store
from storage.db import session_scope
from storage.tables.fhir import FhirResourceVersion, FhirSearchIndex


def _patient(family: str) -> fhir.Patient:
    return fhir.Patient(
        id="9RG1",
        identifier=[fhir.Identifier(system="urn:doctorai:dicom-patient-id", value="9RG1")],
        name=[fhir.HumanName(family=family)],
    )


def test_save_versions_and_reindexes(engine: Engine) -> None:
    with session_scope(engine) as session:
        assert store.save(session, _patient("CompressedSamples")) == 1
        assert store.save(session, _patient("CompressedSamples")) == 1  # same content, same version
        assert store.save(session, _patient("Samples")) == 2
    with session_scope(engine) as session:
        current = store.read(session, "Patient", "9RG1")
        history = session.scalars(select(FhirResourceVersion.version_id).order_by(FhirResourceVersion.version_id))
        index = session.execute(
            select(FhirSearchIndex.param, FhirSearchIndex.value).where(FhirSearchIndex.resource_id == "9RG1")
        ).all()
        found = store.search(session, "Patient", [("identifier", ("urn:doctorai:dicom-patient-id|9RG1",))])
        assert list(history) == [1, 2]
    assert isinstance(current, fhir.Patient) and current.meta is not None and current.meta.versionId == "2"
    assert current.name is not None and current.name[0].family == "Samples"
    # Rewritten, not appended: the family name of version 2 only, and one identifier row.
    assert sorted(index) == [("family", "samples"), ("identifier", "9RG1"), ("name", "samples")]
    assert [r.id for r in found] == ["9RG1"]
