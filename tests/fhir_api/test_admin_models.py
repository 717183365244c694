"""POST /admin/models: a package archive uploaded through the admin API (rclone S3, SQLite), then
activated and listed; invalid manifests, duplicates and unsafe archives refused."""

import io
import json
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sqlalchemy import select

from fhir_api.config import ApiSettings
from fhir_api.app import create_app
from doctorai.stack import StackConfig
from integration.errors import LegacyFormatRefused
from integration.models import registry
from storage.db import make_engine, migrate, session_scope
from storage.objects import make_object_store, model_key
from storage.model_packages import model_package
from storage.tables.audit import AuditEvent
from tests.fhir_api.conftest import Api, serving
from tests.integration.models.test_registry import manifest

pytestmark = pytest.mark.stack


@pytest.fixture
def api(services: StackConfig, tmp_path: Path) -> Iterator[Api]:
    """The API on a fresh SQLite database and the stack's object store."""
    url = f"sqlite:///{tmp_path / 'doctorai.db'}"
    migrate(url)
    settings = ApiSettings(jwt_secret="fhir-server-test-secret-0123456789abcdef")
    storage = services.storage_settings().model_copy(update={"database_url": url})
    engine = make_engine(url)
    try:
        with serving(create_app(settings, storage)) as base:
            yield Api(url=base, engine=engine, settings=settings)
    finally:
        engine.dispose()


def _tiny_onnx() -> bytes:
    """y = x W + b on a 4x4 image flattened: a real graph onnxruntime can load."""
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        initializer=[numpy_helper.from_array(np.full((16, 1), 0.1, dtype=np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def _tar_gz(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _post(api: Api, body: bytes, content_type: str) -> httpx.Response:
    headers = {**api.role("admin"), "Content-Type": content_type}
    return httpx.post(f"{api.url}/admin/models", content=body, headers=headers, timeout=30)


def test_an_uploaded_package_is_stored_activated_and_listed(api: Api, services: StackConfig) -> None:
    name = f"tiny-{uuid.uuid4().hex[:8]}"
    m = manifest(name, "1.0.0")
    # An archived package directory: the manifest sits in its one top directory.
    body = _zip({f"{name}/manifest.json": m.model_dump_json().encode(), f"{name}/model.onnx": _tiny_onnx()})

    answer = _post(api, body, "application/zip")

    assert answer.status_code == 201, answer.text
    assert answer.json()["versions"][0]["status"] == "inactive" and answer.json()["active_version"] is None
    store = make_object_store(services.storage_settings())
    assert store.get_bytes(model_key(name, "1.0.0", "model.onnx")) == _tiny_onnx()
    activated = httpx.post(f"{api.url}/admin/models/{name}/1.0.0/activate", headers=api.role("admin"))
    assert activated.status_code == 200 and activated.json()["active_version"] == "1.0.0"
    listed = httpx.get(f"{api.url}/admin/models", headers=api.role("operator")).json()["items"]
    [model] = [entry for entry in listed if entry["name"] == name]
    assert model["active_version"] == "1.0.0" and model["versions"][0]["manifest"]["framework"] == "onnx"
    # Audited as the other admin changes are.
    with session_scope(api.engine) as session:
        records = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-configuration")))
    actions = [(r.entity_what, r.detail["action"], r.detail["model"]) for r in records]
    assert actions == [("/admin/models", "upload", name), (f"/admin/models/{name}/1.0.0/activate", "activate", name)]
    assert records[0].agent_who == "pacs-admin" and json.loads(records[0].detail["after"])["version"] == "1.0.0"

    # The same name and version again, even as a tar.gz: 409.
    again = _tar_gz({"manifest.json": m.model_dump_json().encode(), "model.onnx": _tiny_onnx()})
    assert _post(api, again, "application/gzip").status_code == 409


def test_an_invalid_manifest_is_422_with_its_errors(api: Api) -> None:
    document = json.loads(manifest(f"bad-{uuid.uuid4().hex[:8]}", "1.0.0").model_dump_json())
    document["framework"] = "caffe"
    del document["report_code"]

    answer = _post(api, _zip({"manifest.json": json.dumps(document).encode(), "model.onnx": b"x"}), "application/zip")

    assert answer.status_code == 422, answer.text
    locations = {tuple(e["loc"]) for e in answer.json()["errors"]}
    assert ("body", "manifest.json", "framework") in locations
    assert ("body", "manifest.json", "report_code") in locations


def test_unsafe_or_foreign_archives_are_refused(api: Api) -> None:
    m = manifest(f"slip-{uuid.uuid4().hex[:8]}", "1.0.0")
    files = {"manifest.json": m.model_dump_json().encode(), "../model.onnx": b"x"}
    assert _post(api, _zip(files), "application/zip").status_code == 400
    assert _post(api, _zip({**files, "/etc/model.onnx": b"x"}), "application/zip").status_code == 400

    link = io.BytesIO()
    with tarfile.open(fileobj=link, mode="w:gz") as archive:
        data = m.model_dump_json().encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        target = tarfile.TarInfo("model.onnx")
        target.type, target.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(target)
    assert _post(api, link.getvalue(), "application/gzip").status_code == 400

    assert _post(api, b"not an archive", "application/zip").status_code == 400
    assert _post(api, m.model_dump_json().encode(), "application/json").status_code == 415
    with session_scope(api.engine) as session:
        assert model_package(session, name=m.name, version="1.0.0") is None


def test_a_legacy_format_is_registered_but_loads_only_once_an_admin_allows_it(api: Api) -> None:
    # Issue 18: a Keras .h5 or TorchScript upload is code its uploader runs in our workers.
    name = f"legacy-{uuid.uuid4().hex[:8]}"
    m = manifest(name, "1.0.0", artifact="model.h5").model_copy(update={"framework": "keras"})
    answer = _post(api, _zip({"manifest.json": m.model_dump_json().encode(), "model.h5": b"HDF5 bytes"}), "application/zip")
    assert answer.status_code == 201, answer.text
    [version] = answer.json()["versions"]
    assert "Keras HDF5" in version["legacy_format"] and version["allow_legacy_format"] is False
    with session_scope(api.engine) as session, pytest.raises(LegacyFormatRefused, match="allow-legacy-format"):
        registry.runnable_manifest(session, name=name, version="1.0.0")

    path = f"{api.url}/admin/models/{name}/1.0.0/allow-legacy-format"
    assert httpx.post(path, headers=api.role("operator")).status_code == 403
    allowed = httpx.post(path, headers=api.role("admin"))
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["versions"][0]["allow_legacy_format"] is True
    with session_scope(api.engine) as session:
        assert registry.runnable_manifest(session, name=name, version="1.0.0").artifact == "model.h5"
        [record] = session.scalars(
            select(AuditEvent).where(AuditEvent.entity_what == f"/admin/models/{name}/1.0.0/allow-legacy-format")
        )
    assert record.detail["action"] == "allow-legacy-format" and json.loads(record.detail["after"]) == {
        "allow_legacy_format": True
    }
    assert httpx.post(f"{api.url}/admin/models/{name}/9.9.9/allow-legacy-format", headers=api.role("admin")).status_code == 404

    # An ONNX package is data: nothing to allow.
    onnx_name = f"tiny-{uuid.uuid4().hex[:8]}"
    m = manifest(onnx_name, "1.0.0")
    assert _post(api, _zip({"manifest.json": m.model_dump_json().encode(), "model.onnx": _tiny_onnx()}), "application/zip").status_code == 201
    refused = httpx.post(f"{api.url}/admin/models/{onnx_name}/1.0.0/allow-legacy-format", headers=api.role("admin"))
    assert refused.status_code == 409 and refused.headers["content-type"] == "application/problem+json"
