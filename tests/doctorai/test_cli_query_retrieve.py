"""The command line of issue 17: `doctorai peers add` with the Query/Retrieve flags, and `doctorai index
backfill` giving studies indexed before the Query/Retrieve keys existed their values."""

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from sqlalchemy import update

from doctorai.cli import main
from doctorai.stack import StackConfig
from storage.config import get_settings
from storage.db import make_engine, migrate, session_scope
from storage.instances import INDEX_VERSION, record_instance
from storage.objects import make_object_store
from storage.peers import get_peer
from storage.tables.index import Study
from tests.studies import rg1_instance


@pytest.fixture
def configured(services: StackConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The DOCTORAI_* settings of a fresh database and the session's object store, as the CLI reads them."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    storage = services.storage_settings()
    monkeypatch.setenv("DOCTORAI_DATABASE_URL", url)
    monkeypatch.setenv("DOCTORAI_S3_ENDPOINT", storage.s3_endpoint)
    monkeypatch.setenv("DOCTORAI_VAR_DIR", str(tmp_path / "var"))  # the CLI's log goes there
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_peers_add_takes_the_query_retrieve_flags(configured: str) -> None:
    assert main(["peers", "add", "PACS", "--host", "10.0.0.5", "--port", "104", "--find", "--move"]) == 0
    engine = make_engine(configured)
    with session_scope(engine) as session:
        peer = get_peer(session, ae_title="PACS")
    engine.dispose()
    assert peer is not None and (peer.port, peer.may_find, peer.may_move, peer.may_get) == (104, True, True, False)


@pytest.mark.stack
def test_index_backfill_reads_the_keys_from_the_stored_objects(configured: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(str(get_testdata_file("RG1_UNCR.dcm")))
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    item = rg1_instance()
    make_object_store(get_settings()).put_bytes(item.object_key, path.read_bytes(), "application/dicom")
    engine = make_engine(configured)
    with session_scope(engine) as session:
        record_instance(session, item=item)  # as indexed before issue 17: no details, version 0
        session.execute(update(Study).values(index_version=0))
    assert main(["index", "backfill"]) == 0
    assert "1 studies" in capsys.readouterr().out
    with session_scope(engine) as session:
        study = session.get(Study, item.study_uid)
        assert study is not None
        assert (study.patient_name, study.patient_sex, study.index_version) == (str(ds.PatientName), ds.PatientSex, INDEX_VERSION)
        assert study.patient_name_folded == study.patient_name.casefold()
    assert main(["index", "backfill"]) == 0  # nothing left to do
    assert "0 studies" in capsys.readouterr().out
    engine.dispose()
