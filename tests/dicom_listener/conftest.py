"""The listener in this process on a free port, storing to the session's real S3 and a fresh SQLite."""

import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import Engine

from integration.instances import indexer
from benchmarks.dicom_scu import read_pdu
from dicom_listener.admission import AssociationCounts
from dicom_listener.config import DicomSettings
from dicom_listener.ingest import Receiver
from dicom_listener.negotiation import APPLICATION_CONTEXT_NAME
from dicom_listener.peers import PeerDirectory
from dicom_listener.server import Server
from doctorai.stack import StackConfig, free_ports
from storage.db import make_engine, migrate
from storage.group_commit import GroupCommit
from storage.objects import ObjectStore, make_object_store


@dataclass
class Listener:
    settings: DicomSettings
    engine: Engine
    objects: ObjectStore
    receiver: Receiver


def serve(services: StackConfig, tmp_path: Path, objects: ObjectStore | None = None, **overrides: Any) -> Iterator[Listener]:
    """Run the SCP with `overrides` of its settings until the generator is closed."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    settings = DicomSettings(dicom_port=free_ports().dicom, quiet_period_seconds=0.5, dicom_peer_cache_seconds=0, **overrides)
    objects = objects or make_object_store(services.storage_settings())
    receiver = Receiver(
        objects=objects,
        engine=engine,
        settings=settings,
        peers=PeerDirectory(engine, settings),
        counts=AssociationCounts(1),
        indexer=GroupCommit(engine, partial(indexer.write, who=f"ae:{settings.dicom_ae_title}")),
    )
    server = Server(settings, receiver).start()
    try:
        yield Listener(settings, engine, objects, receiver)
    finally:
        server.shutdown()
        engine.dispose()


@pytest.fixture
def listener(services: StackConfig, tmp_path: Path) -> Iterator[Listener]:
    yield from serve(services, tmp_path)


def send(port: int, ds: Dataset | Path, *, called: str = "DOCTORAI", calling: str = "TESTSCU") -> Dataset:
    """One association, one C-STORE, release; the status dataset."""
    if isinstance(ds, Path):
        meta = pydicom.dcmread(ds, stop_before_pixels=True)
        sop_class, syntax = meta.SOPClassUID, meta.file_meta.TransferSyntaxUID
    else:
        sop_class, syntax = ds.SOPClassUID, ds.file_meta.TransferSyntaxUID
    ae = AE(ae_title=calling)
    ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        status: Dataset = assoc.send_c_store(ds)
        return status
    finally:
        assoc.release()


def associate_rq(
    contexts: list[PresentationContext], *, called: str = "DOCTORAI", calling: str = "MODALITY", extra: Sequence[object] = ()
) -> bytes:
    """An A-ASSOCIATE-RQ PDU from `calling` proposing `contexts` (IDs 1, 3, 5...), max PDU 32768."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    primitive.calling_ae_title, primitive.called_ae_title = calling, called
    for i, cx in enumerate(contexts):
        cx.context_id = 2 * i + 1
    primitive.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 32768
    primitive.user_information = [maximum, *extra]  # type: ignore[list-item]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def rejection(
    port: int, calling: str, *, called: str = "DOCTORAI", tls: ssl.SSLContext | None = None
) -> tuple[int, int, int]:
    """Ask for an association and return the A-ASSOCIATE-RJ's result, source and reason (PS3.8 9.3.4).

    By hand, not with pynetdicom's requestor: when the RJ arrives before its calling thread looks,
    the requestor closes the connection, finds it closed and reports an abort, the RJ unread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    with sock:
        contexts = [build_context(Verification), build_context(CTImageStorage, [ct().file_meta.TransferSyntaxUID])]
        sock.sendall(associate_rq(contexts, called=called, calling=calling))
        pdu_type, body = read_pdu(sock)
    assert pdu_type == 0x03, f"PDU type {pdu_type:#04x}, not an A-ASSOCIATE-RJ"
    return body[1], body[2], body[3]


def ct() -> Dataset:
    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))
