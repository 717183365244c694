"""The object store the results tests read the study's instance from and write the SR and SEG to."""

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from doctorai.stack import StackConfig
from storage.instances import ReceivedInstance
from storage.objects import ObjectStore, make_object_store


@pytest.fixture
def objects(services: StackConfig, indexed: ReceivedInstance) -> ObjectStore:
    """The object store holding RG1 where the index says it is."""
    store = make_object_store(services.storage_settings())
    store.ensure_bucket()
    store.put_file(indexed.object_key, Path(str(get_testdata_file("RG1_UNCR.dcm"))))
    return store
