"""What the model end-to-end tests share: reading the engine's FHIR API as an EHR would."""

import time
from typing import Any

import httpx
import pytest

from tests.conftest import EngineRun
from tests.test_pipeline import cli_token


class FhirClient:
    """A bearer-token FHIR client on one engine run."""

    def __init__(self, run: EngineRun) -> None:
        self.run = run
        self.base = f"http://127.0.0.1:{run.config.ports.http}/fhir"
        self.headers = {"Authorization": f"Bearer {cli_token()}"}

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> dict[str, Any]:
        """One search; the Bundle."""
        response = httpx.get(f"{self.base}/{resource_type}", params=params, headers=self.headers, timeout=30)
        assert response.status_code == 200, response.text
        bundle: dict[str, Any] = response.json()
        return bundle

    def report_with_results(
        self, patient: str, *, own: bool = False, timeout: float = 240
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Poll until the patient has a DiagnosticReport (`own`: one the engine wrote); it and its Observations."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bundle = self.search(
                "DiagnosticReport", [("patient", patient), ("_include", "DiagnosticReport:result")]
            )
            entries = [e["resource"] for e in bundle.get("entry", [])]
            reports = [
                r
                for r in entries
                if r["resourceType"] == "DiagnosticReport"
                and (not own or any(i.get("system") == "urn:doctorai:job" for i in r.get("identifier", [])))
            ]
            if reports:
                wanted = {ref["reference"] for ref in reports[0].get("result", [])}
                observations = [r for r in entries if r["resourceType"] == "Observation"]
                return reports[0], [o for o in observations if f"Observation/{o['id']}" in wanted]
            dead = self.run.supervisor.dead()
            assert not dead, f"engine process died: {[c.name for c in dead]}\n{self.run.logs()}"
            time.sleep(0.5)
        pytest.fail(f"no DiagnosticReport after {timeout}s\n{self.run.logs()}")
