"""Orthanc (Debian package `orthanc`) as a real PACS on loopback: its process with a generated
configuration, and a thin client of its REST API.

Orthanc is not our code. In the tests it plays the PACS that sends studies to our listener with
its own C-STORE SCU, and the destination that receives our forwards with its C-STORE SCP.
Configuration options: Orthanc Book, "Configuration of Orthanc" (the commented orthanc.json the
package installs in /etc/orthanc lists every option of 1.10).
"""

import json
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from doctorai.stack import free_ports

ORTHANC_BINARY = "/usr/sbin/Orthanc"
# Debian's orthanc-dicomweb: Orthanc as a DICOMweb server (at /dicom-web/) and client of the servers it is given.
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
LOOPBACK = "127.0.0.1"
T = TypeVar("T")


class OrthancError(RuntimeError):
    """Orthanc did not start, or its REST API answered with an error (the message holds its log)."""


@dataclass(frozen=True)
class Modality:
    """A DICOM peer as Orthanc's DicomModalities names it: the AE title to call, host and port."""

    aet: str
    port: int
    host: str = LOOPBACK

    def as_json(self) -> dict[str, str | int]:
        """The object form of a DicomModalities entry (also the body of PUT /modalities/{name})."""
        return {"AET": self.aet, "Host": self.host, "Port": self.port}


@dataclass(frozen=True)
class DicomWebServer:
    """A DICOMweb server as the plugin's DicomWeb.Servers names it: its base URL and a bearer token."""

    url: str
    token: str

    def as_json(self) -> dict[str, Any]:
        """The object form of a DicomWeb.Servers entry (orthanc-dicomweb's Orthanc Book page)."""
        return {"Url": self.url, "HttpHeaders": {"Authorization": f"Bearer {self.token}"}}


class StoreAnswer(BaseModel):
    """Orthanc's answer to a synchronous POST /modalities/{name}/store (its C-STORE SCU job)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    instances_count: int = Field(alias="InstancesCount")
    failed_instances_count: int = Field(alias="FailedInstancesCount")
    local_aet: str = Field(alias="LocalAet")
    remote_aet: str = Field(alias="RemoteAet")


def configuration(
    *,
    directory: Path,
    aet: str,
    http_port: int,
    dicom_port: int,
    modalities: Mapping[str, Modality],
    dicomweb: Mapping[str, DicomWebServer] | None = None,
) -> dict[str, Any]:
    """An orthanc.json for a private, loopback-only Orthanc that stores what it is sent unchanged.

    With `dicomweb` (even empty) the DICOMweb plugin serves /dicom-web/ and knows these servers.
    """
    storage = str(directory / "storage")
    plugin = {} if dicomweb is None else {
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {n: s.as_json() for n, s in dicomweb.items()}},
    }
    return {
        "Name": aet,
        "StorageDirectory": storage,
        "IndexDirectory": storage,
        "StorageCompression": False,
        # A test's data need not survive a power cut; fsync per instance only slows the tests.
        "SyncStorageArea": False,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        # HTTP only from loopback, so no credentials are needed.
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpCompressionEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "MetricsEnabled": False,
        "Plugins": [],
        "LuaScripts": [],
        "SaveJobs": False,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": dicom_port,
        # Any called AE title, and C-STORE/C-ECHO from any calling AE (our forwarder calls as
        # DOCTORAI without being listed); modalities are matched by AE title only.
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowEcho": True,
        "DicomCheckModalityHost": False,
        "UnknownSopClassAccepted": True,
        # Every transfer syntax as SCP (1.2.840.10008.1.2*), and as SCU no transcoding: an
        # instance the peer cannot take in its own syntax fails instead of being converted.
        # "IngestTranscoding" stays unset, so what is received is stored as received.
        "AcceptedTransferSyntaxes": ["1.2.840.10008.1.*"],
        "TranscodeDicomProtocol": False,
        "DicomModalities": {name: m.as_json() for name, m in modalities.items()},
        "DicomModalitiesInDatabase": False,
        "DicomScuTimeout": 60,
        # Close the SCU association when the store job ends instead of keeping it 5 s for reuse.
        "DicomAssociationCloseDelay": 0,
        "StableAge": 1,
        **plugin,
    }


class Orthanc:
    """One running Orthanc with its own storage, ports and log, and a REST client to it."""

    def __init__(self, *, aet: str, http_port: int, dicom_port: int, process: subprocess.Popen[bytes], log_path: Path):
        self.aet = aet
        self.http_port = http_port
        self.dicom_port = dicom_port
        self.process = process
        self.log_path = log_path
        self.terminating = False
        self.http = httpx.Client(base_url=f"http://{LOOPBACK}:{http_port}", timeout=120)

    def modality(self) -> Modality:
        """This Orthanc as a DICOM peer of others (its AE title and DICOM port)."""
        return Modality(aet=self.aet, port=self.dicom_port)

    def log(self, tail: int = 4000) -> str:
        """The last `tail` characters of Orthanc's log."""
        return self.log_path.read_text(errors="replace")[-tail:]

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.is_error:
            raise OrthancError(f"{method} {path} -> {response.status_code}: {response.text}\n{self.log()}")
        return response

    def upload(self, data: bytes) -> str:
        """Store one DICOM file through POST /instances; its Orthanc instance id."""
        answer = self._request("POST", "/instances", content=data).json()
        if answer.get("Status") not in ("Success", "AlreadyStored"):
            raise OrthancError(f"upload refused: {answer}\n{self.log()}")
        return str(answer["ID"])

    def instances(self) -> list[str]:
        """The Orthanc ids of every stored instance."""
        return [str(i) for i in self._request("GET", "/instances").json()]

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file of one instance."""
        return self._request("GET", f"/instances/{instance_id}/file").content

    def calling_aet(self, instance_id: str) -> str:
        """The calling AE title of the association an instance arrived on (Orthanc's RemoteAET metadata)."""
        return self._request("GET", f"/instances/{instance_id}/metadata/RemoteAET").text

    def lookup(self, uid: str, *, level: str | None = None) -> str | None:
        """The Orthanc id of what has this DICOM identifier (a StudyInstanceUID, SOPInstanceUID, ...),
        optionally only at `level` ("Patient", "Study", "Series" or "Instance"); None if not stored."""
        found = self._request("POST", "/tools/lookup", content=uid.encode()).json()
        return next((str(f["ID"]) for f in found if level in (None, f["Type"])), None)

    def find_instance(self, sop_instance_uid: str) -> str | None:
        """The Orthanc id of the instance with this SOPInstanceUID, if stored."""
        return self.lookup(sop_instance_uid, level="Instance")

    def put_modality(self, name: str, modality: Modality) -> None:
        """Add or change a DICOM peer at runtime (PUT /modalities/{name}); not kept across restarts."""
        self._request("PUT", f"/modalities/{name}", json=modality.as_json())

    def echo(self, modality: str) -> None:
        """C-ECHO the peer `modality` (PS3.7 9.1.5); raise OrthancError unless it answers Success."""
        self._request("POST", f"/modalities/{modality}/echo", json={})

    def store(self, modality: str, resources: Sequence[str]) -> StoreAnswer:
        """C-STORE the given patients/studies/series/instances (Orthanc ids) to the peer `modality`
        with Orthanc's own SCU, waiting for the job; raise OrthancError if any instance failed."""
        body = {"Resources": list(resources), "Synchronous": True}
        answer = StoreAnswer.model_validate(self._request("POST", f"/modalities/{modality}/store", json=body).json())
        if answer.failed_instances_count:
            raise OrthancError(f"C-STORE to {modality}: {answer}\n{self.log()}")
        return answer

    def dicomweb_retrieve(self, server: str, study_uid: str) -> int:
        """Retrieve a study from a DICOMweb server by WADO-RS and store it (the plugin's
        POST /dicom-web/servers/{name}/retrieve, synchronous); how many instances it received."""
        body = {"Resources": [{"Study": study_uid}], "Synchronous": True}
        answer = self._request("POST", f"/dicom-web/servers/{server}/retrieve", json=body).json()
        if "ReceivedInstancesCount" not in answer:
            raise OrthancError(f"unexpected answer to a DICOMweb retrieve: {answer}\n{self.log()}")
        return int(answer["ReceivedInstancesCount"])

    def wait_for_instances(self, count: int, *, timeout: float = 60.0) -> list[str]:
        """Poll until at least `count` instances are stored; their ids."""

        def enough() -> list[str] | None:
            ids = self.instances()
            return ids if len(ids) >= count else None

        return eventually(enough, timeout=timeout, what=f"{count} instances in Orthanc {self.aet}")

    def terminate(self) -> None:
        """Ask Orthanc to stop (SIGTERM: it finishes its jobs and closes its index) without waiting."""
        self.http.close()
        # Once only: on a second SIGTERM Orthanc exits at once, skipping its orderly shutdown.
        if self.process.poll() is None and not self.terminating:
            self.process.send_signal(signal.SIGTERM)
            self.terminating = True

    def stop(self, timeout: float = 20.0) -> None:
        """Stop Orthanc and wait for it (about 2.5 s); SIGKILL after `timeout`."""
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_orthanc(
    directory: Path,
    *,
    aet: str,
    modalities: Mapping[str, Modality] | None = None,
    dicom_port: int | None = None,
    dicomweb: Mapping[str, DicomWebServer] | None = None,
    timeout: float = 30.0,
) -> Orthanc:
    """Start Orthanc with a generated configuration in `directory` and wait until its REST API answers.

    `dicom_port` places its DICOM server on a port chosen beforehand (a destination that comes up late);
    `dicomweb` loads the DICOMweb plugin with these servers (configuration()).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ports = free_ports()
    if dicom_port is not None:
        ports = replace(ports, dicom=dicom_port)
    config = configuration(
        directory=directory,
        aet=aet,
        http_port=ports.http,
        dicom_port=ports.dicom,
        modalities=modalities or {},
        dicomweb=dicomweb,
    )
    config_path = directory / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log_path = directory / "orthanc.log"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [ORTHANC_BINARY, str(config_path)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    orthanc = Orthanc(aet=aet, http_port=ports.http, dicom_port=ports.dicom, process=process, log_path=log_path)

    def answers() -> bool | None:
        if process.poll() is not None:
            raise OrthancError(f"Orthanc exited with {process.returncode}\n{orthanc.log()}")
        try:
            return orthanc.http.get("/system").status_code == 200 or None
        except httpx.TransportError:
            return None

    try:
        eventually(answers, timeout=timeout, what=f"Orthanc {aet} answering on port {ports.http}")
    except BaseException:
        orthanc.stop()
        raise
    return orthanc


class OrthancFactory(Protocol):
    """The `orthanc_factory` fixture: start one more Orthanc, stopped when the test ends."""

    def __call__(
        self,
        *,
        aet: str | None = None,
        modalities: Mapping[str, Modality] | None = None,
        dicom_port: int | None = None,
        dicomweb: Mapping[str, DicomWebServer] | None = None,
    ) -> Orthanc: ...


def eventually(condition: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `condition` until it returns something other than None or False; that value.

    Raises TimeoutError after `timeout` seconds, naming `what` was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
