"""The process scaffold: the stop signal, the stop-aware sleep, bounded stops and the health port."""

import asyncio
import json
import signal
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import Engine

from doctorai.stack import StackConfig, free_ports
from integration import process
from storage.objects import make_object_store
from tests.probes import get

# Each script prints "ready" once its signal handlers are in place, then waits for the stop.
ASYNC_MAIN = """
import asyncio, sys
from integration import process

async def main(stop: asyncio.Event) -> None:
    print("ready", flush=True)
    {body}

process.run(main)
print("returned", flush=True)
"""

THREADS_MAIN = """
import threading
from integration import process

def main(stop: threading.Event) -> None:
    print("ready", flush=True)
    {body}

process.run_threads(main)
print("returned", flush=True)
"""


def _start(template: str, body: str) -> subprocess.Popen[str]:
    script = template.format(body=textwrap.indent(body, "    ").strip())
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n", child.stderr
    return child


def _stopped(child: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> tuple[int, str, str]:
    """Send `sig`, wait for the exit (bounded: a process that ignores it fails the test), and say how it ended."""
    child.send_signal(sig)
    out, err = child.communicate(timeout=process.EXIT_SECONDS + 10)
    return child.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_stop_event(sig: signal.Signals) -> None:
    child = _start(ASYNC_MAIN, 'await stop.wait()\nprint("stopping", flush=True)')
    assert _stopped(child, sig)[:2] == (0, "stopping\nreturned\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_stop_event_of_threads(sig: signal.Signals) -> None:
    child = _start(THREADS_MAIN, 'stop.wait()\nprint("stopping", flush=True)')
    assert _stopped(child, sig)[:2] == (0, "stopping\nreturned\n")


def test_work_that_does_not_stop_is_cancelled_after_the_grace() -> None:
    body = """try:
    await asyncio.sleep(3600)  # deaf to the stop event
except asyncio.CancelledError:
    print("cancelled", flush=True)
    raise"""
    code, out, _ = _stopped(_start(ASYNC_MAIN, body))
    assert (code, out) == (0, "cancelled\nreturned\n")


def test_a_thread_blocked_in_io_does_not_hold_the_exit() -> None:
    """Issue 18: a thread that nobody can interrupt (a read from a paused object store) held the process for minutes."""
    body = """import time
await asyncio.to_thread(time.sleep, 3600)"""
    code, _, err = _stopped(_start(ASYNC_MAIN, body))
    assert code == 1 and "exiting now" in err


def test_threads_blocked_do_not_hold_the_exit_either() -> None:
    body = """import time
threading.Thread(target=time.sleep, args=(3600,)).start()  # not a daemon: the interpreter would wait for it
stop.wait()"""
    code, _, err = _stopped(_start(THREADS_MAIN, body))
    assert code == 1 and "exiting now" in err


def test_what_the_work_raises_is_raised() -> None:
    script = "from integration import process\nasync def main(stop):\n    raise ValueError('broken')\n\nprocess.run(main)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "ValueError: broken" in done.stderr


def test_the_sleep_wakes_on_stop() -> None:
    async def scenario() -> tuple[bool, bool]:
        stop = asyncio.Event()
        slept = await process.sleep(stop, 0.01)
        asyncio.get_running_loop().call_later(0.05, stop.set)
        # Bounded by wait_for: a sleep deaf to the stop would fail here rather than sleep an hour.
        woken = await asyncio.wait_for(process.sleep(stop, 3600), 10)
        return slept, woken

    assert asyncio.run(scenario()) == (False, True)


def _get(url: str) -> tuple[int, object]:
    status, body = get(url)
    return status, json.loads(body) if body else None


def test_the_health_port_reports_the_processs_own_dependencies(services: StackConfig, engine: Engine) -> None:
    port = free_ports().integration_metrics
    storage = services.storage_settings()
    own = process.Own(storage, services.integration_settings(), engine, make_object_store(storage))
    alive = [True]
    with process.health_port(port, own, alive=lambda: alive[0]):
        status, ready = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, ready
        assert ready["checks"] == {"database": "ok", "object_store": "ok", "kafka": "ok"}
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
        alive[0] = False
        assert _get(f"http://127.0.0.1:{port}/healthz") == (503, {"status": "failing"})
    assert get(f"http://127.0.0.1:{port}/healthz") == (0, b"")  # closed with the block

