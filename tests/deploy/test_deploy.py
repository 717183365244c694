"""The deployment files, checked without a Docker engine or a cluster.

Compose file against the Compose Specification schema, manifests against the Kubernetes
schemas, the Dockerfile through hadolint, alert rules and scrape config through promtool.
"""

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (DEPLOY / "env.example").read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.startswith("#")}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in env and (env[name] or op != ":-"):
            return env[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg

    return re.sub(r"\$\{([A-Z0-9_]+)(:[-?])?([^}]*)\}", value, text)


def own_values() -> dict[str, str]:
    """env.example with every placeholder replaced by a value of one's own, as its first line says."""
    from storage.config import is_placeholder

    return {k: secrets.token_urlsafe(32) if is_placeholder(v) else v for k, v in env_example().items()}


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    text = interpolate((ROOT / "docker-compose.yml").read_text(), env_example() if env is None else env)
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def compose_validator() -> jsonschema.Draft201909Validator:
    """The schema declares draft 2019-09."""
    return jsonschema.Draft201909Validator(json.loads((ROOT / "tests/data/compose/compose-spec.json").read_text()))


def test_compose_file_follows_the_compose_specification() -> None:
    document = compose()
    compose_validator().validate(document)
    services = document["services"]
    for needed in ("kafka", "minio", "postgres", "init", "api", "results", "integration", "dicom", "mllp",
                   "subscriptions", "inference-chest", "prometheus", "grafana"):
        assert needed in services
    assert services["inference-chest"]["deploy"]["replicas"] == 2


def test_compose_requires_every_secret() -> None:
    env = env_example()
    del env["DOCTORAI_JWT_SECRET"]
    with pytest.raises(KeyError, match="DOCTORAI_JWT_SECRET"):
        interpolate((ROOT / "docker-compose.yml").read_text(), env)


def test_the_schema_check_can_fail() -> None:
    broken = compose()
    broken["services"]["api"]["restart"] = ["not", "a", "string"]
    with pytest.raises(jsonschema.ValidationError):
        compose_validator().validate(broken)


def test_compose_environment_starts_the_engine_locally(tmp_path: Path) -> None:
    """The environment compose gives the engine is understood by it: production mode starts with it
    (the API process, its hosts pointed at this machine) once env.example's placeholders are
    replaced, and refuses it without the secret or with the placeholders (issue 18)."""
    engine_env = {k: str(v) for k, v in compose(own_values())["services"]["api"]["environment"].items()}
    from doctorai.stack import free_ports, http_ok

    port = free_ports().http
    local = {
        **engine_env,
        "DOCTORAI_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
        "DOCTORAI_S3_ENDPOINT": f"127.0.0.1:{free_ports().s3}",
        "DOCTORAI_HTTP_HOST": "127.0.0.1",
        "DOCTORAI_HTTP_PORT": str(port),
    }
    from storage.db import migrate

    migrate(local["DOCTORAI_DATABASE_URL"])
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fhir_api"], env={**os.environ, **local}, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        import time

        deadline = time.monotonic() + 30
        while not http_ok(f"http://127.0.0.1:{port}/healthz"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(20)
    refused = subprocess.run([sys.executable, "-m", "fhir_api"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={**os.environ, **local, "DOCTORAI_JWT_SECRET": ""})
    assert refused.returncode != 0 and "DOCTORAI_JWT_SECRET" in refused.stdout + refused.stderr
    for name in ("DOCTORAI_S3_SECRET_KEY", "DOCTORAI_JWT_SECRET"):
        example = {k: str(v) for k, v in compose()["services"]["api"]["environment"].items()}
        refused = subprocess.run([sys.executable, "-m", "fhir_api"], check=False, cwd=ROOT, capture_output=True, text=True, timeout=60,
                                 env={**os.environ, **local, name: example[name]})
        assert refused.returncode != 0 and f"refusing to start: {name}" in refused.stderr, refused.stderr[-2000:]


def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_kubernetes_manifests_validate() -> None:
    docs = manifests()
    for name, doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in docs}
    assert ("HorizontalPodAutoscaler", "api") in kinds and ("HorizontalPodAutoscaler", "inference-chest") in kinds
    assert any(kind == "PodDisruptionBudget" for kind, _ in kinds)
    for listener in ("dicom", "mllp"):  # the DICOM and MLLP listeners behind TCP Services
        service = next(doc for _, doc in docs if doc["kind"] == "Service" and doc["metadata"]["name"] == listener)
        assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["ports"][0]["protocol"] == "TCP"
    listed = set(yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    for _, doc in docs:
        if doc["kind"] == "Deployment":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            assert container["resources"]["requests"] and ("livenessProbe" in container or "startupProbe" in container)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions with In) selects these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _pods(docs: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
    """(name, pod labels, pod spec) of every workload's pod template."""
    pods = []
    for _, doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            template = doc["spec"]["template"]
            pods.append((doc["metadata"]["name"], template.get("metadata", {}).get("labels", {}), template["spec"]))
    return pods


def test_kubernetes_exposes_only_what_each_component_needs() -> None:
    """Issue 18, finding 6: load balancers keep the client's address and admit the hospital network only,
    ingress is denied by default, and each pod is reachable only on the ports it serves, from whom it
    serves them: the API from anywhere, DICOM and MLLP from an address block, the engine's own
    database, object store and broker from the engine's pods only."""
    docs = manifests()
    balancers = [d for _, d in docs if d["kind"] == "Service" and d["spec"].get("type") == "LoadBalancer"]
    assert {b["metadata"]["name"] for b in balancers} == {"dicom", "mllp"}
    for balancer in balancers:
        assert balancer["spec"]["externalTrafficPolicy"] == "Local", balancer["metadata"]["name"]
        assert balancer["spec"]["loadBalancerSourceRanges"], balancer["metadata"]["name"]
    policies = [d["spec"] for _, d in docs if d["kind"] == "NetworkPolicy"]
    assert {"podSelector": {}, "policyTypes": ["Ingress"]} in policies  # default deny, no rule
    services = [d for _, d in docs if d["kind"] == "Service"]
    for name, labels, spec in _pods(docs):
        selecting = [p for p in policies if p["podSelector"] and _selects(p["podSelector"], labels)]
        rules = [rule for p in selecting for rule in p.get("ingress", [])]
        admitted = {port["port"] for rule in rules for port in rule.get("ports", [])}
        for service in services:
            if _selects({"matchLabels": service["spec"]["selector"]}, labels):
                for port in service["spec"]["ports"]:
                    assert port["targetPort"] in admitted, (name, port)
        for rule in rules:
            sources = rule.get("from", [])
            if not sources:  # open to every client: the API alone, which authenticates every request
                assert labels.get("app") == "api", name
            for source in sources:
                assert set(source) <= {"ipBlock", "podSelector", "namespaceSelector"}, (name, source)
        uses_engine_secret = any(
            ref.get("secretRef", {}).get("name") == "doctorai-engine" for c in spec["containers"] for ref in c.get("envFrom", [])
        ) or any(
            e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "doctorai-engine"
            for c in spec["containers"]
            for e in c.get("env", [])
        )
        assert uses_engine_secret == (labels.get("doctorai/tier") == "engine"), name
    for internal in ("postgres", "minio", "kafka"):
        (policy,) = [p for p in policies if p["podSelector"] == {"matchLabels": {"app": internal}}]
        assert [source for rule in policy["ingress"] for source in rule["from"]] == [
            {"podSelector": {"matchLabels": {"doctorai/tier": "engine"}}}
        ]
    for listener in ("dicom", "mllp"):
        (policy,) = [p for p in policies if p["podSelector"] == {"matchLabels": {"app": listener}}]
        assert "ipBlock" in policy["ingress"][0]["from"][0], listener


def test_the_manifest_check_can_fail() -> None:
    _, doc = next((n, d) for n, d in manifests() if d["kind"] == "Deployment")
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, "1.30.0", strict=True)


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([str(BIN / "hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_and_scrape_config_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    rules = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus/alerts.yml")], capture_output=True, text=True)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus/prometheus.yml")], capture_output=True, text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_grafana_dashboard_is_provisioned() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/doctorai-pipeline.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/doctorai.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    volumes = compose()["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes


def test_dashboard_and_alerts_name_only_metrics_the_engine_exports() -> None:
    """A renamed metric must not leave a silent panel or an alert that can never fire."""
    import prometheus_client

    # Importing registers each module's metrics.
    import dicom_listener.metrics  # noqa: F401
    import fhir_api.metrics  # noqa: F401
    import hl7_listener.metrics  # noqa: F401
    import inference.metrics  # noqa: F401
    import integration.metrics  # noqa: F401
    import results.metrics  # noqa: F401

    exported = {
        sample_name
        for metric in prometheus_client.REGISTRY.collect()
        for sample_name in (metric.name, f"{metric.name}_total", f"{metric.name}_bucket", f"{metric.name}_count", f"{metric.name}_sum")
    }
    texts = [
        (DEPLOY / "grafana/dashboards/doctorai-pipeline.json").read_text(),
        (DEPLOY / "prometheus/alerts.yml").read_text(),
    ]
    named = {name for text in texts for name in re.findall(r"\bdoctorai_[a-z0-9_]+", text)}
    assert named, "no metric found in the dashboard or the alert rules"
    assert named - exported == set()
