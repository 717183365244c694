"""Issue 18, on the real engine: a process that dies is restarted by the supervisor `doctorai up`
runs (Supervisor.watch), while the others keep serving with the same PIDs.

Measured before: the supervisor logged the death, stopped every other process and exited 1, so a
SIGKILL of the DICOM listener was a 25-80 s outage of every door.
"""

import os
import signal
import threading
import time
from collections.abc import Callable

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from doctorai.stack import http_ok
from tests.conftest import EngineRun
from tests.probes import get


def _echo(port: int) -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DOCTORAI")
    try:
        return bool(assoc.is_established and assoc.send_c_echo().Status == 0)
    finally:
        assoc.release()


def _wait(condition: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.2)


def test_a_killed_listener_is_restarted_and_counted_while_the_others_keep_their_pids(engine_run: EngineRun) -> None:
    engine_run.start(models=())  # no inference worker: the listener's restart is what is tested
    supervisor = engine_run.supervisor
    p = engine_run.config.ports
    pids = {c.name: c.process.pid for c in supervisor.children}
    stop = threading.Event()
    watching = threading.Thread(target=supervisor.watch, args=(stop,), kwargs={"interval": 0.1})
    watching.start()
    try:
        os.kill(pids["dicom"], signal.SIGKILL)

        def restarted() -> bool:
            value = supervisor.registry.get_sample_value("doctorai_process_restarts_total", {"process": "dicom"})
            return value == 1.0

        _wait(restarted, "the supervisor restarts the listener")
        # Ready first: a refused connection leaves pynetdicom's socket unclosed (a ResourceWarning).
        _wait(lambda: http_ok(f"http://127.0.0.1:{p.dicom_metrics}/readyz"), "the restarted listener is ready")
        assert _echo(p.dicom)
        now = {c.name: c.process.pid for c in supervisor.children}
        assert now["dicom"] != pids["dicom"]
        assert {k: v for k, v in now.items() if k != "dicom"} == {k: v for k, v in pids.items() if k != "dicom"}
        assert all(c.process.poll() is None for c in supervisor.children), engine_run.logs()
        status, _ = get(f"http://127.0.0.1:{p.http}/healthz")
        assert status == 200
    finally:
        stop.set()
        watching.join(30)
    assert supervisor.registry.get_sample_value("doctorai_process_restarts_total", {"process": "dicom"}) == 1.0
