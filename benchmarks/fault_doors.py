"""benchmarks/faults.py at the doors: fuzz (benchmarks/fuzz_cases.py's bad input, classified by the
answer each door owes it) and floods (a well-behaved sender's rate alone and beside idle or slow connections).
"""

import contextlib
import copy
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import httpx
import psutil
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification

from benchmarks import dicom_scu, fuzz_cases
from benchmarks.fault_load import CR, FS, VT, ack_code, hl7_order, mllp_exchange
from benchmarks.fault_stack import Stack

# A door that has not answered nor closed this long after the sender finished writing is hung.
HANG_SECONDS = 15.0
# A deflate bomb's inflated size, and how much of it the listener may hold: inflation must be bounded
# (or streamed to disk), never the whole data set in memory.
BOMB_BYTES = 192 << 20
BOMB_ALLOWANCE = BOMB_BYTES // 2
# The harness sends bad UIDs and values on purpose: neither pynetdicom nor pydicom may stop them.
_config.ENFORCE_UID_CONFORMANCE = False
pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE


class Door:
    """One door's fuzz figures."""

    def __init__(self, name: str, process: str, stack: Stack) -> None:
        self.name, self.process, self.stack = name, process, stack
        self.cases = 0
        self.answers: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.hangs: list[str] = []
        self.server_errors: list[str] = []
        self.good_after: list[bool] = []
        self.restarts_before = self._restarts()
        self.log_at = self._log_size()

    def _restarts(self) -> int:
        value = self.stack.supervisor.registry.get_sample_value("doctorai_process_restarts_total", {"process": self.process})
        return int(value or 0)

    def _log_size(self) -> int:
        path = self.stack.child(self.process).log_path
        return path.stat().st_size if path.exists() else 0

    def tracebacks(self) -> int:
        """Tracebacks the door's process logged since the fuzz began (an internal error, not a refusal)."""
        with self.stack.child(self.process).log_path.open("rb") as log:
            log.seek(self.log_at)
            return log.read().count(b"Traceback (most recent call last)")

    def crashes(self) -> int:
        """Times the door's process died during the fuzz (each a restart the supervisor counted)."""
        return self._restarts() - self.restarts_before

    def line(self) -> str:
        answers = " ".join(f"{k}={v}" for k, v in sorted(self.answers.items()))
        ok = sum(self.good_after)
        return (f"fuzz {self.name}: cases={self.cases} crashes={self.crashes()} hangs={len(self.hangs)} "
                f"5xx={len(self.server_errors)} wrong={len(self.wrong)} tracebacks={self.tracebacks()} "
                f"good_after_bursts={ok}/{len(self.good_after)} answers({answers})")


def exchange(port: int, payload: bytes) -> tuple[bytes, bool]:
    """Write `payload`, close our side, read until the door closes: (what it answered, whether it hung)."""
    reply = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=HANG_SECONDS) as sock:
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            except OSError:  # it closed while we wrote: a refusal
                pass
            while len(reply) < (4 << 20):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except TimeoutError:
        return reply, True
    except OSError:
        pass
    return reply, False


def _dicom_answer(reply: bytes) -> str:
    """The first PDU's type (PS3.8 9.3.1), checked for a consistent length; "closed" when none."""
    if not reply:
        return "closed"
    if len(reply) < 6 or reply[0] not in (0x02, 0x03, 0x07):
        return "bad"
    (length,) = struct.unpack(">I", reply[2:6])
    return {0x02: "associate-ac", 0x03: "associate-rj", 0x07: "abort"}[reply[0]] if len(reply) >= 6 + length else "bad"


def echo(port: int) -> bool:
    """A C-ECHO, as a well-behaved peer sends it."""
    ae = AE(ae_title="FAULTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="DOCTORAI")
    try:
        return bool(assoc.is_established and assoc.send_c_echo().Status == 0)
    finally:
        if assoc.is_established:
            assoc.release()


def _bursts(door: Door, cases: Iterable[Any], burst: int, one: Callable[[Any], None], good: Callable[[], bool]) -> None:
    for i, case in enumerate(cases, 1):
        one(case)
        door.cases += 1
        if i % burst == 0:
            door.good_after.append(_retrying(good))
    door.good_after.append(_retrying(good))


def _retrying(good: Callable[[], bool], seconds: float = 60.0) -> bool:
    """A good request answered within `seconds` (the door may be restarting after a crash the figures count)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # any failure of the good request is retried, then counted
            if good():
                return True
        time.sleep(0.5)
    return False


def fuzz_dicom_pdus(stack: Stack, n: int, burst: int, rng: random.Random) -> Door:
    """Raw PDUs at the DICOM port: each answered by A-ASSOCIATE-RJ, A-ABORT or a close; never an AC to what must be refused."""
    door = Door("dicom-pdus", "dicom", stack)
    port = stack.config.ports.dicom

    def one(case: fuzz_cases.Case) -> None:
        label, payload, must_refuse = case
        reply, hung = exchange(port, payload)
        answer = _dicom_answer(reply)
        door.answers[answer] += 1
        if hung:
            door.hangs.append(label)
        elif answer == "bad" or (must_refuse and answer == "associate-ac"):
            door.wrong.append(f"{label}: {answer}")

    _bursts(door, fuzz_cases.dicom_pdus(n, rng), burst, one, lambda: echo(port))
    return door


def _bad_dataset(i: int, rng: random.Random, base: pydicom.Dataset) -> tuple[str, pydicom.Dataset, bool]:
    ds = copy.deepcopy(base)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    kind = rng.randrange(4)
    if kind == 0:
        bad = rng.choice(fuzz_cases.BAD_UIDS)
        setattr(ds, rng.choice(["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"]), bad)
        return f"bad-uid-{bad}", ds, True
    if kind == 1:
        for _ in range(rng.randint(1, 4)):
            keyword = rng.choice(["PatientName", "PatientID", "StudyDate", "Modality", "AccessionNumber", "StudyDescription",
                                  "PatientBirthDate", "BodyPartExamined", "InstanceNumber", "NumberOfFrames"])
            try:
                setattr(ds, keyword, rng.choice(["", "\\" * 20, "9" * 70, "../..", "2024-13-45", "\x00\x01", "ÿ" * 30]))
            except ValueError:  # pydicom will not hold it in a number (IS); the next draws still do
                continue
        return f"odd-values-{i}", ds, False
    if kind == 2:
        del ds[rng.choice(["StudyInstanceUID", "SeriesInstanceUID", "PatientID", "Modality"])]
        return f"missing-element-{i}", ds, False
    ds.add_new(0x00091010, "OB", rng.randbytes(rng.randint(1, 1 << 16)))
    return f"private-bytes-{i}", ds, False


def fuzz_dicom_datasets(stack: Stack, n: int, burst: int, rng: random.Random) -> Door:
    """C-STOREs of bad data sets: a bad UID gets a failure status that is not 'retry later' (0xA7xx), up front."""
    door = Door("dicom-datasets", "dicom", stack)
    port = stack.config.ports.dicom
    base = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    cases = [_bad_dataset(i, rng, base) for i in range(n)]
    # Our own one-thread SCU: pynetdicom's can lose a response under load (benchmarks/dicom_scu.py).
    connect = partial(
        dicom_scu.associate, port, abstract=CTImageStorage, syntax=ExplicitVRLittleEndian, calling="FAULTSCU", timeout=HANG_SECONDS
    )
    sock: socket.socket | None = None
    max_pdu = 0
    for i, (label, ds, must_refuse) in enumerate(cases, 1):
        door.cases += 1
        if sock is None:  # the first, or the last one ended
            try:
                sock, max_pdu = connect()
            except (OSError, dicom_scu.Refused):
                door.answers["association-refused"] += 1
                door.wrong.append(f"{label}: a good association refused")
                continue
        try:
            code = dicom_scu.c_store(sock, ds, message_id=i, max_pdu=max_pdu, implicit_vr=False)
        except (ValueError, AttributeError, TypeError):  # pydicom would not encode it: nothing was sent
            door.answers["not-sendable"] += 1
            continue
        except TimeoutError:
            door.answers["none"] += 1
            door.hangs.append(label)
            sock.close()
            sock = None
            continue
        except (OSError, dicom_scu.Refused) as exc:
            door.answers["none"] += 1
            door.wrong.append(f"{label}: association ended, no status ({exc})")
            sock.close()
            sock = None
            continue
        answer = "success" if code == 0 or code >> 12 == 0xB else f"{code:04X}"
        door.answers[answer if answer == "success" else f"failure-{answer[:2]}xx"] += 1
        if must_refuse and (answer == "success" or 0xA700 <= code <= 0xA7FF):
            door.wrong.append(f"{label}: {answer}")
        if i % burst == 0:
            door.good_after.append(_retrying(lambda: echo(port)))
    if sock is not None:
        dicom_scu.release(sock)
    door.good_after.append(_retrying(lambda: echo(port)))
    return door


def deflate_bomb(stack: Stack) -> str:
    """One data set that inflates to BOMB_BYTES, in a deflated transfer syntax: the listener's peak memory must not follow it."""
    port = stack.config.ports.dicom
    listener = psutil.Process(stack.child("dicom").process.pid)

    def peak() -> int:
        status = open(f"/proc/{listener.pid}/status").read()  # noqa: SIM115 - one read
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) << 10  # type: ignore[union-attr]

    before = peak()
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.add_new(0x00090010, "LO", "FUZZ")
    ds.add_new(0x00091010, "OB", bytes(BOMB_BYTES))
    ae = AE(ae_title="FAULTSCU")
    ae.add_requested_context(CTImageStorage, [DeflatedExplicitVRLittleEndian])
    ae.dimse_timeout = ae.network_timeout = 120
    assoc = ae.associate("127.0.0.1", port, ae_title="DOCTORAI")
    answer = "no association"
    if assoc.is_established:
        status = assoc.send_c_store(ds)
        answer = f"{int(status.Status):04X}" if "Status" in status else "no status"
        if assoc.is_established:
            assoc.release()
    del ds
    alive = listener.is_running() and stack.child("dicom").process.pid == listener.pid
    grew = peak() - before if alive else -1
    held = alive and grew <= BOMB_ALLOWANCE
    return f"deflate_bomb: inflated={BOMB_BYTES >> 20}MB status={answer} listener_alive={alive} peak_rss_growth={grew >> 20}MB ok={held}"


def _mllp_answer(reply: bytes) -> str:
    if not reply:
        return "closed"
    if not (reply.startswith(VT) and reply.endswith(FS + CR)):
        return "bad"
    return ack_code(reply) or "bad"


def fuzz_mllp(stack: Stack, n: int, burst: int, rng: random.Random) -> Door:
    """MLLP frames and HL7 messages: each answered by an ACK (AE/AR for what must be refused) or a close."""
    door = Door("mllp", "mllp", stack)
    port = stack.config.ports.mllp
    good = hl7_order("FUZZGOOD")

    def one(case: fuzz_cases.Case) -> None:
        label, payload, must_refuse = case
        reply, hung = exchange(port, payload)
        answer = _mllp_answer(reply)
        door.answers[answer] += 1
        if hung:
            door.hangs.append(label)
        elif answer == "bad" or (must_refuse and answer in ("AA", "CA")):
            door.wrong.append(f"{label}: {answer}")

    counter = iter(range(10**9))
    _bursts(door, fuzz_cases.hl7_frames(n, rng, good), burst, one,
            lambda: ack_code(mllp_exchange(port, VT + hl7_order(f"FUZZOK{next(counter)}") + FS + CR)) == "AA")
    return door


def fuzz_http(stack: Stack, name: str, token: str, requests: Iterable[tuple[str, str, str, bytes]], burst: int,
              refusal: Callable[[httpx.Response], bool], good: Callable[[httpx.Client], bool]) -> Door:
    """Requests at the API: never a 5xx, a hang or a refusal without its body (OperationOutcome, problem+json)."""
    door = Door(name, "api", stack)
    base = f"http://127.0.0.1:{stack.config.ports.http}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=HANG_SECONDS) as client:

        def one(case: tuple[str, str, str, bytes]) -> None:
            label, method, path, body = case
            try:
                answer = client.request(method, path, content=body or None)
            except httpx.TimeoutException:
                door.hangs.append(label)
                return
            except httpx.HTTPError as exc:
                door.answers["dropped"] += 1
                door.wrong.append(f"{label}: {type(exc).__name__}")
                return
            door.answers[f"{answer.status_code // 100}xx"] += 1
            if answer.status_code >= 500:
                door.server_errors.append(f"{label}: {answer.status_code}")
            elif answer.status_code >= 400 and not refusal(answer):
                door.wrong.append(f"{label}: {answer.status_code} without its body")

        _bursts(door, requests, burst, one, lambda: good(client))
    return door


def _operation_outcome(answer: httpx.Response) -> bool:
    try:
        return bool(answer.json().get("resourceType") == "OperationOutcome")
    except (ValueError, AttributeError):
        return False


def _problem(answer: httpx.Response) -> bool:
    return "json" in answer.headers.get("content-type", "")


def fuzz(stack: Stack, token: str, admin: str, n: int, burst: int, rng: random.Random, figures: Any) -> None:
    """Every door's fuzz, one after the other, with the figures each prints."""
    runs: list[Callable[[], Door]] = [
        lambda: fuzz_dicom_pdus(stack, n, burst, rng),
        lambda: fuzz_dicom_datasets(stack, max(50, n // 10), min(burst, 50), rng),
        lambda: fuzz_mllp(stack, n, burst, rng),
        lambda: fuzz_http(stack, "fhir", token, fuzz_cases.fhir_requests(n, rng), burst, _operation_outcome,
                          lambda c: c.get("/fhir/metadata").status_code == 200 and c.get("/fhir/Patient?_count=1").status_code == 200),
        lambda: fuzz_http(stack, "admin", admin, fuzz_cases.admin_requests(n, rng), burst, _problem,
                          lambda c: c.get("/admin/rules").status_code == 200),
    ]
    for run in runs:  # one door after the other, each door's figures as soon as it is done
        door = run()
        figures.say(door.line())
        figures.crashes += door.crashes()
        figures.hangs += len(door.hangs)
        figures.server_errors += len(door.server_errors)
        figures.wrong += len(door.wrong) + door.tracebacks()
        problems = door.wrong[:5] + door.hangs[:5] + door.server_errors[:5]
        if door.crashes() or door.hangs or door.server_errors or door.wrong or door.tracebacks() or not all(door.good_after):
            figures.failures.append(f"fuzz {door.name}: {door.line().split(': ', 1)[1].split(' answers')[0]}; e.g. {problems}")
    bomb = deflate_bomb(stack)
    figures.say(bomb)
    if not bomb.endswith("ok=True"):
        figures.failures.append(bomb)
        figures.wrong += 1


# Floods


def _dicom_rate(port: int, seconds: float) -> float:
    """C-STOREs per second a well-behaved sender gets on one association."""
    base = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    base.StudyInstanceUID, base.SeriesInstanceUID = generate_uid(), generate_uid()
    ae = AE(ae_title="FAULTSCU")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        assoc = ae.associate("127.0.0.1", port, ae_title="DOCTORAI")
        while assoc.is_established and time.monotonic() < end:
            base.SOPInstanceUID = generate_uid()
            status = assoc.send_c_store(base)
            done += "Status" in status and status.Status == 0
        if assoc.is_established:
            assoc.release()
        elif time.monotonic() < end:
            time.sleep(0.1)
    return done / seconds


def _mllp_rate(port: int, seconds: float) -> float:
    """ORM messages per second acknowledged AA on one connection."""
    done, end, n = 0, time.monotonic() + seconds, 0
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                while time.monotonic() < end:
                    n += 1
                    sock.sendall(VT + hl7_order(f"FLOOD{time.time_ns()}{n}") + FS + CR)
                    data = b""
                    while not data.endswith(FS + CR):
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise ConnectionError
                        data += chunk
                    done += ack_code(data) == "AA"
        except OSError:
            time.sleep(0.1)
    return done / seconds


def _http_rate(port: int, token: str, seconds: float) -> float:
    """FHIR searches per second answered 200 on one kept-alive connection."""
    done, end = 0, time.monotonic() + seconds
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while time.monotonic() < end:
            try:
                done += client.get("/fhir/Patient?_count=1").status_code == 200
            except httpx.HTTPError:
                time.sleep(0.1)
    return done / seconds


def _idle(port: int, count: int, stop: threading.Event, drip: bytes = b"") -> threading.Thread:
    """`count` TCP connections held open until `stop`; with `drip`, one byte of it every 2 s on each (a slow client)."""

    def hold() -> None:
        socks = []
        for _ in range(count):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        i = 0
        while not stop.wait(2.0 if drip else 0.5):
            for s in socks:
                if drip and i < len(drip):
                    try:
                        s.send(drip[i : i + 1])
                    except OSError:
                        pass
            i += 1
        for s in socks:
            s.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def floods(stack: Stack, token: str, connections: int, seconds: float, figures: Any) -> None:
    """Each door's well-behaved rate alone and during a flood of idle (or slow) connections; the ratio."""
    p = stack.config.ports
    slow = b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    doors: list[tuple[str, int, Callable[[], float], bytes]] = [
        ("dicom-idle-connections", p.dicom, lambda: _dicom_rate(p.dicom, seconds), b""),
        ("mllp-idle-connections", p.mllp, lambda: _mllp_rate(p.mllp, seconds), b""),
        ("http-slow-clients", p.http, lambda: _http_rate(p.http, token, seconds), slow),
    ]
    for name, port, rate, drip in doors:
        rate()  # warm-up: the first association or connection pays for imports and pools
        alone = rate()
        stop = threading.Event()
        holder = _idle(port, connections, stop, drip)
        time.sleep(1.0)  # the flood's connections are open
        during = rate()
        stop.set()
        holder.join(30)
        ratio = during / alone if alone else 0.0
        figures.say(f"flood {name}: connections={connections} alone={alone:.1f}/s during={during:.1f}/s ratio={ratio:.2f}")
        if ratio < 0.5:
            figures.failures.append(f"flood {name}: ratio {ratio:.2f} < 0.5")
