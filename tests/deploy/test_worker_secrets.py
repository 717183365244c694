"""Engine pods get only the secrets they use: the JWT signing key only where the API's package runs (issue 18)."""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
# The HTTP API and the subscription deliverer load the API's settings, which hold the signing key.
SIGNING = {("api", "api"), ("mllp", "subscriptions")}


def _containers() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if not document or document.get("kind") not in ("Deployment", "StatefulSet", "Job"):
                continue
            for container in document["spec"]["template"]["spec"]["containers"]:
                found.append((path.stem, document["metadata"]["name"], container))
    return found


def test_only_the_api_processes_get_the_jwt_secret() -> None:
    engine = [(f, n, c) for f, n, c in _containers() if "doctorai" in c["image"]]
    assert {n for _, n, _ in engine} >= {"api", "dicom", "results", "integration", "inference-chest", "subscriptions"}
    for manifest, name, container in engine:
        whole = any(source.get("secretRef", {}).get("name") == "doctorai-engine" for source in container.get("envFrom", []))
        if (manifest, name) in SIGNING:
            assert whole, name
            continue
        # A whole secret mounted with envFrom would bring every key, the JWT secret among them.
        assert not whole, name
        keys = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}) for e in container.get("env", [])}
        assert "DOCTORAI_JWT_SECRET" not in keys, name
        assert keys["DOCTORAI_DATABASE_URL"]["name"] == "doctorai-engine", name
        # Every process appends audit records: with a site's audit key, each one seals them.
        assert keys["DOCTORAI_AUDIT_KEY"] == {"name": "doctorai-engine", "key": "DOCTORAI_AUDIT_KEY", "optional": True}, name
