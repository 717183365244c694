"""The engine's worker pods get only the secrets they use: never the JWT signing key (issue 18)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_worker_pods_do_not_get_the_jwt_secret() -> None:
    documents = [d for d in yaml.safe_load_all((ROOT / "deploy/k8s/workers.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in documents} == {"results", "integration"}
    for document in documents:
        for container in document["spec"]["template"]["spec"]["containers"]:
            # A whole secret mounted with envFrom would bring every key, the JWT secret among them.
            assert all("secretRef" not in source for source in container.get("envFrom", [])), document["metadata"]["name"]
            names = {e["name"] for e in container.get("env", [])}
            assert "DOCTORAI_JWT_SECRET" not in names and "DOCTORAI_DATABASE_URL" in names
