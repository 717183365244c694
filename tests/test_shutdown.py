"""Issue 18, on the real stack with the object store paused (SIGSTOP, as an operator's fault would):
every process's /readyz answers 503 within its bound, and every process stops promptly on SIGTERM.

Measured before: /readyz gave no answer in 15 s, and the integration, results and inference processes
ignored SIGTERM until the supervisor killed them 20 s later: their Kafka consumers' LeaveGroup waited
for a broker that took requests but did not answer (Tansu keeps its state in the paused store), and
threads blocked on the store held the interpreter's exit.
"""

import json
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psutil

from doctorai.stack import StackConfig
from tests.conftest import EngineRun
from tests.probes import get

# The supervisor kills a process still running 20 s after SIGTERM; a prompt stop takes far less.
STOP_SECONDS = 10.0


@contextmanager
def paused(config: StackConfig) -> Iterator[None]:
    """SIGSTOP the session's object store (rclone) for the block: it takes connections but answers nothing."""
    address = f"127.0.0.1:{config.ports.s3}"
    [rclone] = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if "rclone" in (p.info["name"] or "") and address in (p.info["cmdline"] or [])
    ]
    rclone.suspend()
    try:
        yield
    finally:
        rclone.resume()


def readiness(port: int) -> tuple[int, dict[str, dict[str, str]]]:
    """GET /readyz (a probe that hangs fails the test: tests.probes bounds it)."""
    status, body = get(f"http://127.0.0.1:{port}/readyz")
    return status, json.loads(body)


def test_with_the_object_store_paused_probes_answer_and_sigterm_stops_every_process(
    engine_run: EngineRun, services: StackConfig
) -> None:
    # A second start on the broker, as in production: its consumer groups exist already, so leaving
    # them is a request the broker must write down (to the paused store) before it answers.
    engine_run.start()
    engine_run.stop()
    engine_run.start()
    p = engine_run.config.ports
    ports = {
        "api": p.http,
        "dicom": p.dicom_metrics,
        "mllp": p.mllp_metrics,
        "integration": p.integration_metrics,
        "results": p.results_metrics,
        "subscriptions": p.subscriptions_metrics,
        "inference-chest-xray-pneumonia": p.inference_metrics,
    }
    children = list(engine_run.supervisor.children)
    assert {c.name for c in children} == set(ports)
    with paused(services):
        with ThreadPoolExecutor(len(ports)) as probes:  # together: each waits out its checks' deadline
            answers = dict(zip(ports, probes.map(readiness, ports.values()), strict=True))
        for name, (status, answer) in answers.items():
            assert status == 503, (name, answer)
            assert answer["checks"]["object_store"].startswith("unavailable"), (name, answer)
        lingering = []
        for child in children:
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                lingering.append(child.name)
        assert not lingering, f"still running {STOP_SECONDS:.0f}s after SIGTERM: {lingering}\n{engine_run.logs()}"
