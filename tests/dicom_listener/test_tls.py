"""DICOM over TLS (PS3.15 B.9, BCP 195) with a certificate authority made here: stores over TLS,
mutual TLS, plain TCP and bad client certificates refused, and the allowlist's reject reason."""

import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError
from pydicom.data import get_testdata_file
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicom_listener.config import DicomSettings
from dicom_listener.errors import TlsMisconfigured
from dicom_listener.tls import server_context
from doctorai.stack import StackConfig, engine_env, free_ports, http_ok
from doctorai.supervisor import Supervisor
from storage.db import make_engine, migrate, session_scope
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance
from tests.dicom_listener.conftest import Listener, ct, rejection, serve


@dataclass
class Pki:
    ca: trustme.CA
    ca_file: Path
    cert_file: Path
    key_file: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    paths = Pki(ca, tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    ca.cert_pem.write_to_path(str(paths.ca_file))
    server.cert_chain_pems[0].write_to_path(str(paths.cert_file))
    server.private_key_pem.write_to_path(str(paths.key_file))
    return paths


def _tls_listener(services: StackConfig, tmp_path: Path, pki: Pki, *, mutual: bool, **overrides: Any) -> Iterator[Listener]:
    return serve(
        services,
        tmp_path,
        dicom_tls_cert_file=str(pki.cert_file),
        dicom_tls_key_file=str(pki.key_file),
        dicom_tls_ca_file=str(pki.ca_file) if mutual else "",
        **overrides,
    )


def _client_context(pki: Pki, client_ca: trustme.CA | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    pki.ca.configure_trust(context)
    if client_ca is not None:
        client_ca.issue_cert("modality.example").configure_cert(context)
    return context


def _associate(listener: Listener, context: ssl.SSLContext | None, calling: str = "MODALITY") -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ct().file_meta.TransferSyntaxUID)
    tls_args = (context, "localhost") if context is not None else None
    return ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI", tls_args=tls_args)


def _refused_connection(listener: Listener, context: ssl.SSLContext | None) -> None:
    """Associate, expect the listener to drop the connection, and close our socket."""
    sockets: list[socket.socket] = []
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(Verification)
    tls_args = (context, "localhost") if context is not None else None
    # pynetdicom's requestor leaks its socket when the peer closed first (its shutdown() raises
    # ENOTCONN and close() is skipped): keep a reference to close it ourselves.
    handlers: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, lambda event: sockets.append(event.assoc.dul.socket.socket))]
    assoc = ae.associate(
        "127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI", tls_args=tls_args, evt_handlers=handlers
    )
    deadline = time.monotonic() + 15
    while assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established and not assoc.is_alive()
    for sock in sockets:
        sock.close()


def _refusals(listener: Listener, count: int) -> list[AuditEvent]:
    # The SCU sees the connection close before the SCP's thread commits its audit row.
    deadline = time.monotonic() + 10
    while True:
        with session_scope(listener.engine) as s:
            rows = list(s.scalars(select(AuditEvent).where(AuditEvent.subtype == "association-rejected")))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


@pytest.mark.stack
def test_mutual_tls_stores_and_refuses_plain_and_unknown_client_certificates(
    services: StackConfig, tmp_path: Path, pki: Pki
) -> None:
    for listener in _tls_listener(services, tmp_path, pki, mutual=True):
        # A peer that connects and says nothing must not hold up the others (its handshake waits
        # in its own thread, not in the one accepting connections).
        with socket.create_connection(("127.0.0.1", listener.settings.dicom_port)):
            assoc = _associate(listener, _client_context(pki, pki.ca))
            assert assoc.is_established
        ds = ct()
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        with session_scope(listener.engine) as s:
            assert s.get(Instance, str(ds.SOPInstanceUID)) is not None

        _refused_connection(listener, None)  # plain DICOM on the TLS port
        _refused_connection(listener, _client_context(pki, None))  # no client certificate
        _refused_connection(listener, _client_context(pki, trustme.CA()))  # another CA's certificate
        refusals = _refusals(listener, 4)  # the silent peer's, and the three above
        assert len(refusals) == 4
        assert all(r.agent_address == "127.0.0.1" and r.detail["reason"].startswith("TLS handshake failed") for r in refusals)


@pytest.mark.stack
def test_unknown_calling_ae_over_tls_is_rejected_with_reason_3(services: StackConfig, tmp_path: Path, pki: Pki) -> None:
    for listener in _tls_listener(services, tmp_path, pki, mutual=False, dicom_allow_unknown_peers=False):
        # Rejected-permanent, service-user, calling-AE-title-not-recognized (PS3.8 Table 9-21).
        rejected = rejection(listener.settings.dicom_port, "STRANGER", tls=_client_context(pki, None))
        assert rejected == (1, 1, 3)
        (audit,) = _refusals(listener, 1)
        assert audit.agent_who == "ae:STRANGER"


def test_tls_settings_are_checked_and_name_the_setting(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="DOCTORAI_DICOM_TLS_KEY_FILE"):
        DicomSettings(dicom_tls_cert_file="server.pem")
    with pytest.raises(ValidationError, match="DOCTORAI_DICOM_TLS_CA_FILE"):
        DicomSettings(dicom_tls_ca_file="ca.pem")
    with pytest.raises(TlsMisconfigured, match="DOCTORAI_DICOM_TLS_CERT_FILE"):
        server_context(DicomSettings(dicom_tls_cert_file=str(tmp_path / "missing.pem"), dicom_tls_key_file=str(pki.key_file)))
    with pytest.raises(TlsMisconfigured, match="DOCTORAI_DICOM_TLS_CA_FILE"):
        server_context(
            DicomSettings(
                dicom_tls_cert_file=str(pki.cert_file), dicom_tls_key_file=str(pki.key_file), dicom_tls_ca_file=str(pki.key_file)
            )
        )
    assert server_context(DicomSettings()) is None


@pytest.mark.stack
def test_dcmtk_storescu_over_mutual_tls(services: StackConfig, tmp_path: Path, pki: Pki) -> None:
    client = pki.ca.issue_cert("dcmtk.example")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    path = str(get_testdata_file("CT_small.dcm"))
    for listener in _tls_listener(services, tmp_path, pki, mutual=True):
        # dcmtk's default profile is the Non-downgrading BCP 195 TLS profile (PS3.15 B.10).
        tls = ["+tls", str(tmp_path / "client.key"), str(tmp_path / "client.pem"), "+cf", str(pki.ca_file)]
        command = ["storescu", *tls, "-aec", "DOCTORAI", "-aet", "DCMTK", "127.0.0.1", str(listener.settings.dicom_port), path]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        with session_scope(listener.engine) as s:
            assert s.get(Instance, str(ct().SOPInstanceUID)) is not None


@pytest.mark.stack
def test_two_listener_processes_serve_tls_from_the_environment(services: StackConfig, tmp_path: Path, pki: Pki) -> None:
    ports = replace(free_ports(), s3=services.ports.s3)
    config = StackConfig(var_dir=tmp_path / "var", ports=ports)
    config.var_dir.mkdir()
    url = config.storage_settings().resolved_database_url()
    migrate(url)
    client = pki.ca.issue_cert("dcmtk.example")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    files = []
    for i in range(4):
        ds = ct()
        ds.SOPInstanceUID = generate_uid()
        files.append(tmp_path / f"{i}.dcm")
        ds.save_as(files[-1])
    env = {
        **engine_env(config),
        "DOCTORAI_DICOM_TLS_CERT_FILE": str(pki.cert_file),
        "DOCTORAI_DICOM_TLS_KEY_FILE": str(pki.key_file),
        "DOCTORAI_DICOM_TLS_CA_FILE": str(pki.ca_file),
    }
    supervisor = Supervisor(config.var_dir / "logs")
    metrics = f"http://127.0.0.1:{ports.dicom_metrics}/metrics"
    try:
        child = supervisor.start(
            "dicom", [sys.executable, "-m", "dicom_listener", "--workers", "2"], env=env, ready=lambda: http_ok(metrics), cwd=Path.cwd()
        )
        tls = ["+tls", str(tmp_path / "client.key"), str(tmp_path / "client.pem"), "+cf", str(pki.ca_file)]
        senders = [
            subprocess.Popen(
                ["storescu", *tls, "-aec", "DOCTORAI", "-aet", "PACS", "127.0.0.1", str(ports.dicom), str(f)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for f in files
        ]
        assert [p.wait(60) for p in senders] == [0] * 4
        plain = subprocess.run(
            ["storescu", "-aec", "DOCTORAI", "-aet", "PACS", "127.0.0.1", str(ports.dicom), str(files[0])],
            capture_output=True,
            timeout=60,
        )
        assert plain.returncode != 0
        engine = make_engine(url)
        with session_scope(engine) as s:
            assert s.scalar(select(func.count()).select_from(Instance)) == 4
        engine.dispose()
    finally:
        supervisor.stop_all()
    assert child.process.returncode == 0
