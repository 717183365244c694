"""FHIR search speed on 100,000 DiagnosticReports, against a constant-JSON FastAPI route.

Loads N reports (default 100,000, over 1,000 patients, dates spread over two years) through the
store's own `save` in batches, then serves the API with uvicorn in one process and, in another,
a reference FastAPI app whose one route returns a constant JSON document of the same size as the
search answer. The same sequential httpx loop drives both; the script prints requests per
second, p50 and p99 latency for

    DiagnosticReport?patient=Patient/pX
    DiagnosticReport?date=ge2024-06-01&status=final

and the ratios to the reference (how many times slower a real search is than answering with
a constant). Nothing is timed inside the test suite; this is the place for speed.

    .venv/bin/python benchmarks/fhir_search.py                     # 100,000 reports, SQLite
    .venv/bin/python benchmarks/fhir_search.py --database-url postgresql+psycopg://postgres@127.0.0.1/test

A --database-url that already holds the reports of an earlier run is searched without loading
again. The `total` column shows the Bundle.total the server chose (exact when a criterion
bounds the matches to a few, an estimate otherwise; see README "FHIR search").
"""

import argparse
import multiprocessing
import random
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage import fhir
from storage.fhir import store  # noqa: E402
from fhir_api.auth.tokens import issue_token  # noqa: E402
from fhir_api.config import ApiSettings  # noqa: E402
from storage.db import make_engine, migrate, session_scope  # noqa: E402
from storage.tables.fhir import FhirResource  # noqa: E402

# The rate limiter runs (its cost is part of every request) with a limit no loop reaches.
SETTINGS = ApiSettings(jwt_secret="benchmark-secret-0123456789abcdef0123", rate_limit_per_second=1e9, rate_limit_burst=10**9)
START = datetime(2023, 1, 1, tzinfo=UTC)
STATUSES = ["final"] * 7 + ["preliminary", "amended", "registered"]


def _report(i: int, rng: random.Random) -> fhir.DiagnosticReport:
    effective = START + timedelta(minutes=rng.randrange(0, 2 * 365 * 24 * 60))
    return fhir.DiagnosticReport(
        id=f"r{i}",
        status=rng.choice(STATUSES),
        category=[fhir.CodeableConcept(coding=[fhir.Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD")])],
        code=fhir.CodeableConcept(coding=[fhir.Coding(system="http://loinc.org", code="18748-4", display="Diagnostic imaging study")]),
        subject=fhir.Reference(reference=f"Patient/p{i % 1000}"),
        effectiveDateTime=effective,
        issued=effective + timedelta(minutes=5),
        imagingStudy=[fhir.Reference(reference=f"ImagingStudy/1.2.826.0.1.3680043.8.498.{i}")],
        conclusion="No acute cardiopulmonary abnormality.",
    )


def load(url: str, count: int, batch: int) -> float | None:
    """Save `count` reports in transactions of `batch`; returns reports per second (None: already loaded).

    A database that holds the first `count` reports of an earlier run is used as it is, so a
    kept database (--database-url) is loaded once.
    """
    engine = make_engine(url)
    with session_scope(engine) as session:
        present = session.scalar(
            select(func.count()).select_from(FhirResource).where(FhirResource.resource_type == "DiagnosticReport")
        )
    if present == count:
        engine.dispose()
        return None
    if present:
        raise SystemExit(f"the database holds {present:,} DiagnosticReports, not {count:,}: use an empty one")
    rng = random.Random(5)
    started = time.perf_counter()
    for first in range(0, count, batch):
        with session_scope(engine) as session:
            store.save_many(session, [_report(i, rng) for i in range(first, min(first + batch, count))])
        print(f"\r  loaded {min(first + batch, count):,} reports", end="", flush=True)
    print()
    engine.dispose()
    return count / (time.perf_counter() - started)


def analyze(url: str) -> None:
    """Give PostgreSQL's planner statistics, as autovacuum does after a bulk load (it may be off on a dev server)."""
    if not url.startswith("postgresql"):
        return
    engine = make_engine(url)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve_api(url: str, port: int) -> None:
    import uvicorn

    from fhir_api.app import create_app
    from storage.config import StorageSettings

    storage = StorageSettings(database_url=url, s3_endpoint="127.0.0.1:1")
    uvicorn.run(create_app(SETTINGS, storage), host="127.0.0.1", port=port, log_config=None, access_log=False)


def _serve_reference(port: int, body: bytes) -> None:
    import uvicorn
    from fastapi import FastAPI, Response

    app = FastAPI()

    @app.get("/constant")
    def constant() -> Response:
        return Response(content=body, media_type="application/fhir+json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def _start(target: object, *args: object) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    process.start()
    return process


def _wait(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def drive(client: httpx.Client, paths: list[str], requests: int) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency (ms) of a sequential loop over `paths`."""
    for path in paths[:20]:
        client.get(path).raise_for_status()  # warm-up
    times = []
    started = time.perf_counter()
    for n in range(requests):
        t0 = time.perf_counter()
        client.get(paths[n % len(paths)]).raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(times, n=100)
    return requests / elapsed, cuts[49], cuts[98]


def main() -> None:
    """Load, serve, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--database-url", default="", help="default: a SQLite file in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate(url)
        print(f"loading {args.reports:,} DiagnosticReports into {url.split('@')[-1]}")
        rate = load(url, args.reports, args.batch)
        print(f"  load: {rate:,.0f} reports/s through store.save_many" if rate else "  already loaded")
        analyze(url)
        api_port, ref_port = _free_port(), _free_port()
        api = _start(_serve_api, url, api_port)
        _wait(f"http://127.0.0.1:{api_port}/healthz")
        token = issue_token(SETTINGS, subject="benchmark", scopes=["system/DiagnosticReport.rs"], roles=[])
        headers = {"Authorization": f"Bearer {token}"}
        rng = random.Random(7)
        queries = {
            "patient=X": [f"/fhir/DiagnosticReport?patient=Patient/p{rng.randrange(1000)}" for _ in range(200)],
            "date=ge&status=final": [
                f"/fhir/DiagnosticReport?date=ge2024-{m:02d}-01&status=final" for m in range(1, 13)
            ],
        }
        results = {}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers=headers, timeout=60) as client:
                for name, paths in queries.items():
                    sample = client.get(paths[0])
                    sample.raise_for_status()
                    total = sample.json().get("total", "omitted")
                    results[name] = (drive(client, paths, args.requests), len(sample.content), total)
        finally:
            api.terminate()
            api.join()
        print(f"\n{'query':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}   reference req/s  p50   p99   ratio req/s  ratio p50")
        for name, ((rps, p50, p99), size, total) in results.items():
            ref = _start(_serve_reference, ref_port, b"x" * size)
            _wait(f"http://127.0.0.1:{ref_port}/constant")
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{ref_port}", timeout=60) as client:
                    r_rps, r_p50, r_p99 = drive(client, ["/constant"], args.requests)
            finally:
                ref.terminate()
                ref.join()
            print(
                f"{name:<24}{rps:>9.1f}{p50:>9.2f}{p99:>9.2f}   {r_rps:>15.1f}{r_p50:>6.2f}{r_p99:>6.2f}"
                f"   {r_rps / rps:>10.2f}x{p50 / r_p50:>10.2f}x   ({size:,} bytes, total {total})"
            )


if __name__ == "__main__":
    main()
