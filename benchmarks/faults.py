"""Faults, fuzz and floods against the real local stack (issue 18): the proof that a crash or an outage
delays work but never loses or doubles it, and that no door can be broken by what a sender writes.

Starts a private PostgreSQL cluster (initdb in a temporary directory), then rclone S3, Tansu and every
engine process as `doctorai up` does, supervised as `doctorai up` supervises them (a process that
dies is restarted), and runs each mode in turn:

- crash: N CT studies by C-STORE, an HL7 order by MLLP and a FHIR Patient with each, while a driver
  SIGKILLs the engine processes at random moments, each once a round; then every acknowledged instance, message and
  resource is stored once, every study has exactly one current report of its routed model, and
  `doctorai audit verify` passes;
- outage: the same traffic while the object store (rclone) is paused, then the broker (Tansu), then
  the database is restarted: senders get retriable answers, the backlog drains, nothing lost or doubled;
- floods: a well-behaved sender's rate alone and during hundreds of idle TCP connections (DICOM,
  MLLP) or slow HTTP clients (the API); the ratio (target >= 0.5);
- fuzz: generated bad input at every door (benchmarks/fuzz_cases.py): zero crashes, hangs and 5xx,
  every answer a protocol-correct refusal, the door still serving a good request after every burst.

    .venv/bin/python benchmarks/faults.py              # every mode, full size (about 40 minutes on 2 cores)
    .venv/bin/python benchmarks/faults.py --smoke      # small sizes, three to four minutes
    .venv/bin/python benchmarks/faults.py --modes crash,fuzz --studies 20 --fuzz-cases 2000

The last line is the summary `faults: lost=0 duplicated=0 5xx=0 crashes=0 hangs=0 wrong=0 ...`;
the exit status is 0 only when every figure holds (the flood ratios included).
"""

import argparse
import os
import random
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine

from benchmarks import fault_doors, fault_load
from benchmarks.fault_load import Tally
from benchmarks.fault_stack import ENGINE, Stack, running
from fhir_api.auth.tokens import issue_token
from fhir_api.config import ApiSettings

MODES = ("crash", "outage", "floods", "fuzz")


@dataclass(frozen=True)
class Sizes:
    """How big each mode runs."""

    studies: int
    pace: float  # seconds between studies in crash mode, so that faults land throughout the traffic
    kill_every: tuple[float, float]  # seconds between faults, drawn uniformly
    store_pause: float
    broker_pause: float
    fuzz_cases: int
    burst: int
    flood_connections: int
    flood_seconds: float
    drain_seconds: float


FULL = Sizes(50, 3.0, (2.0, 6.0), 30.0, 60.0, 10_000, 500, 300, 10.0, 300.0)
SMOKE = Sizes(10, 1.0, (1.0, 2.5), 5.0, 5.0, 300, 100, 100, 3.0, 120.0)


@dataclass
class Figures:
    """Every figure a run prints; `failures` names each that does not hold."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    server_errors: int = 0
    crashes: int = 0
    hangs: int = 0
    wrong: int = 0

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    def counted(self, mode: str, result: fault_load.Count) -> None:
        self.lost += result.lost
        self.duplicated += result.duplicated + result.reports_doubled
        self.lost += result.reports_missing
        for name in ("lost", "duplicated", "reports_missing", "reports_doubled"):
            if getattr(result, name):
                self.failures.append(f"{mode}: {name}={getattr(result, name)}")
        if result.audit != "intact":
            self.failures.append(f"{mode}: audit {result.audit}")


def tokens() -> tuple[str, str]:
    """A FHIR client's token and an admin's, signed with the stack's secret (its environment)."""
    settings = ApiSettings()
    client = issue_token(settings, subject="faults", scopes=["system/*.cruds"], roles=[])
    admin = issue_token(settings, subject="faults-admin", scopes=["system/*.cruds"], roles=["admin"])
    return client, admin


def crash(stack: Stack, token: str, sizes: Sizes, rng: random.Random, figures: Figures) -> None:
    """Traffic flowing while a driver SIGKILLs the engine processes one at a time, at random moments,
    each of them once in every round (so the DICOM listener dies mid-association too)."""
    tally, stop = Tally(), threading.Event()
    deadline = time.monotonic() + 60 * max(5.0, sizes.studies / 2)
    sender = threading.Thread(
        target=fault_load.flow, args=(stack, token, tally),
        kwargs={"studies": sizes.studies, "stop": stop, "tag": "C", "deadline": deadline, "pace": sizes.pace},
    )
    began = time.monotonic()
    sender.start()
    recoveries: list[float] = []
    faults: list[str] = []
    rounds: list[str] = []
    while sender.is_alive():
        if stop.wait(rng.uniform(*sizes.kill_every)) or not sender.is_alive():
            break
        if not rounds:  # every engine process dies once a round, in a random order
            rounds = rng.sample(ENGINE, len(ENGINE))
        name = rounds.pop()
        pid = stack.child(name).process.pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        faults.append(name)
        try:
            recoveries.append(stack.wait_back(name, pid))
        except TimeoutError as exc:
            figures.failures.append(f"crash: {exc}")
            break
    sender.join()
    sent = time.monotonic() - began
    result = fault_load.count(stack, _db(stack), tally, drain_seconds=sizes.drain_seconds)
    figures.counted("crash", result)
    figures.server_errors += tally.server_errors
    recover = f"recover_p50={statistics.median(recoveries):.1f}s recover_max={max(recoveries):.1f}s" if recoveries else "recover=n/a"
    figures.say(
        f"crash: studies={sizes.studies} instances_acked={len(tally.instances)} hl7_acked={len(tally.hl7)} "
        f"fhir_acked={len(tally.fhir)} faults_injected={len(faults)} ({', '.join(sorted(set(faults)))}) "
        f"restarts={stack.restarts()} {recover} sent_in={sent:.0f}s retried={sum(tally.retriable.values())} "
        f"{result.line()}"
    )
    unsent = sizes.studies * 2 - len(tally.instances)
    if unsent:
        figures.failures.append(f"crash: {unsent} instances never acknowledged")


def outage(stack: Stack, token: str, sizes: Sizes, figures: Figures) -> None:
    """Traffic flowing while the object store is paused, then the broker, then the database restarted."""
    tally, stop = Tally(), threading.Event()
    deadline = time.monotonic() + sizes.store_pause + sizes.broker_pause + 600
    studies = max(6, sizes.studies // 2)
    sender = threading.Thread(
        target=fault_load.flow, args=(stack, token, tally),
        kwargs={"studies": 10_000, "stop": stop, "tag": "O", "deadline": deadline},
    )
    sender.start()
    timings = []
    for name, seconds in (("s3", sizes.store_pause), ("kafka", sizes.broker_pause)):
        process = stack.process(name)
        process.suspend()
        began = time.monotonic()
        time.sleep(seconds)
        process.resume()
        timings.append(f"{name}_paused={time.monotonic() - began:.0f}s")
    began = time.monotonic()
    stack.postgres.restart()
    timings.append(f"database_restart={time.monotonic() - began:.1f}s")
    # Traffic until some studies went through after the last fault, then stop and count.
    after = len(tally.instances)
    while sender.is_alive() and len(tally.instances) < max(after + 4, studies * 2):
        time.sleep(0.5)
    stop.set()
    sender.join()
    result = fault_load.count(stack, _db(stack), tally, drain_seconds=sizes.drain_seconds)
    figures.counted("outage", result)
    figures.server_errors += tally.server_errors
    retried = " ".join(f"{door}={n}" for door, n in sorted(tally.retriable.items())) or "none"
    refused = sum(tally.refused.values())
    figures.say(
        f"outage: {' '.join(timings)} instances_acked={len(tally.instances)} hl7_acked={len(tally.hl7)} "
        f"fhir_acked={len(tally.fhir)} retriable_answers({retried}) final_refusals={refused} 5xx={tally.server_errors} "
        f"restarts={stack.restarts()} {result.line()}"
    )
    if refused:
        figures.failures.append(f"outage: {refused} good inputs refused for good (not retriable): {dict(tally.refused)}")


def _db(stack: Stack):  # type: ignore[no-untyped-def]
    return create_engine(stack.config.storage_settings().resolved_database_url(), pool_pre_ping=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="small sizes and short pauses (three to four minutes)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--studies", type=int, help="studies sent in crash mode (default 50; smoke 10)")
    parser.add_argument("--fuzz-cases", type=int, help="bad inputs per door (default 10000; smoke 300)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--work", type=Path, help="keep the stack's data and logs in this (new) directory")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    if args.studies is not None:
        sizes = Sizes(**{**sizes.__dict__, "studies": args.studies})
    if args.fuzz_cases is not None:
        sizes = Sizes(**{**sizes.__dict__, "fuzz_cases": args.fuzz_cases})
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")
    # A SIGTERM ends the run like Ctrl-C: the stack below is stopped, no engine process or database is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    rng = random.Random(args.seed)
    figures = Figures()
    began = time.monotonic()
    with running(args.work) as stack:
        token, admin = tokens()
        figures.say(f"stack: up in {time.monotonic() - began:.0f}s, logs in {stack.config.var_dir / 'logs'}")
        if "crash" in modes:
            crash(stack, token, sizes, rng, figures)
        if "outage" in modes:
            outage(stack, token, sizes, figures)
        if "floods" in modes:
            fault_doors.floods(stack, token, sizes.flood_connections, sizes.flood_seconds, figures)
        if "fuzz" in modes:
            fault_doors.fuzz(stack, token, admin, sizes.fuzz_cases, sizes.burst, rng, figures)
    figures.say(
        f"faults: lost={figures.lost} duplicated={figures.duplicated} 5xx={figures.server_errors} "
        f"crashes={figures.crashes} hangs={figures.hangs} wrong={figures.wrong} failures={len(figures.failures)}"
    )
    for failure in figures.failures:
        print(f"FAILED {failure}", flush=True)
    return 1 if figures.failures else 0


if __name__ == "__main__":
    sys.exit(main())
