"""End-to-end latency of the chest X-ray path on the local stack.

Starts the local stack in a temporary directory, sends N copies of the real CR chest radiograph
(RG1_UNCR.dcm, new UIDs each) one study at a time at a steady rate with dcmtk's storescu, and
measures, per study, from storescu's return (the last C-STORE acknowledged) to the
DiagnosticReport being found by a FHIR search. The reference, measured in the same run, is the
model's own work on one image (preprocessing and prediction called directly), so the ratio says
what the pipeline adds besides the quiet period.

    .venv/bin/python benchmarks/e2e_latency.py --studies 10 --quiet-period 1
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fhir_api.auth.tokens import issue_token  # noqa: E402
from fhir_api.config import ApiSettings  # noqa: E402
from doctorai.stack import (
    SPINE_MODEL,
    StackConfig,
    free_ports,
    prepare_database,
    start_broker,
    start_engine,
    start_object_store,
)
from doctorai.supervisor import Supervisor


def model_reference(path: Path, repeats: int) -> float:
    """Median seconds for the model alone: preprocess one image and predict, in this process."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import numpy as np

    from inference.adapters import keras as keras_adapter
    from inference.preprocess import prepare
    from inference.packages import lookup

    manifest, artifact = lookup("chest-xray-pneumonia")
    model = keras_adapter.load(artifact)
    data = path.read_bytes()
    keras_adapter.predict(model, np.stack([prepare(data, manifest)]))  # warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        keras_adapter.predict(model, np.stack([prepare(data, manifest)]))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def stage_quantiles(port: int, model: str) -> dict[str, dict[float, float]]:
    """p50/p95/p99 of each stage of `doctorai_e2e_latency_seconds`, as Prometheus's histogram_quantile
    estimates them from the buckets (linear within a bucket)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{port}/metrics").text):
        for sample in family.samples:
            if sample.name == "doctorai_e2e_latency_seconds_bucket" and sample.labels["model"] == model:
                buckets.setdefault(sample.labels["stage"], []).append((float(sample.labels["le"]), sample.value))
    out: dict[str, dict[float, float]] = {}
    for stage, cumulative in buckets.items():
        cumulative.sort()
        total = cumulative[-1][1]
        out[stage] = {}
        for q in (0.5, 0.95, 0.99):
            rank, lower, below = q * total, 0.0, 0.0
            for upper, count in cumulative:
                if count >= rank:
                    if upper == float("inf"):
                        out[stage][q] = lower
                    else:
                        out[stage][q] = lower + (upper - lower) * ((rank - below) / max(count - below, 1e-9))
                    break
                lower, below = upper, count
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--quiet-period", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between studies")
    args = parser.parse_args()

    source = Path(str(get_testdata_file("RG1_UNCR.dcm")))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = StackConfig(
            var_dir=work / "var", ports=free_ports(), quiet_period_seconds=args.quiet_period, models=(SPINE_MODEL,)
        )
        supervisor = Supervisor(config.var_dir / "logs")
        try:
            prepare_database(config)
            start_object_store(config, supervisor)
            start_broker(config, supervisor)
            start_engine(config, supervisor)
            token = issue_token(ApiSettings(), subject="benchmark", scopes=["system/*.rs"], roles=[])
            url = f"http://127.0.0.1:{config.ports.http}/fhir/DiagnosticReport"
            latencies: list[float] = []
            began = time.monotonic()
            for n in range(args.studies):
                ds = pydicom.dcmread(source)
                ds.PatientID = f"BENCH{n}"
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                path = work / f"study{n}.dcm"
                ds.save_as(path)
                started = time.monotonic()
                subprocess.run(
                    ["storescu", "-aec", "DOCTORAI", "127.0.0.1", str(config.ports.dicom), str(path)], check=True
                )
                sent = time.monotonic()
                while True:
                    bundle = httpx.get(url, params={"patient": f"BENCH{n}"}, headers={"Authorization": f"Bearer {token}"}).json()
                    if bundle.get("total"):
                        break
                    if time.monotonic() - sent > 120:
                        raise SystemExit(f"study {n}: no report after 120 s; logs in {config.var_dir / 'logs'}")
                    time.sleep(0.05)
                latencies.append(time.monotonic() - sent)
                time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
            elapsed = time.monotonic() - began
            stages = stage_quantiles(config.ports.results_metrics, "chest-xray-pneumonia")
        finally:
            supervisor.stop_all()
    reference = model_reference(source, repeats=5)
    beyond_quiet = [lat - args.quiet_period for lat in latencies]
    print(f"studies: {args.studies}, quiet period: {args.quiet_period:.1f} s, one CR image each (7.2 MB)")
    print(
        f"last C-STORE -> report searchable: p50 {percentile(latencies, 50):.2f} s, "
        f"p95 {percentile(latencies, 95):.2f} s, p99 {percentile(latencies, 99):.2f} s"
    )
    print(f"throughput reached: {args.studies / elapsed * 60:.1f} studies/min (one study every {args.interval:.1f} s sent)")
    print("doctorai_e2e_latency_seconds (report committed), from its buckets:")
    for stage in ("quiet-period", "queue", "inference", "report", "total"):
        q = stages.get(stage, {})
        print(f"  {stage:>12}: p50 {q.get(0.5, float('nan')):.2f} s, p95 {q.get(0.95, float('nan')):.2f} s, p99 {q.get(0.99, float('nan')):.2f} s")
    print(f"reference (model alone, preprocess + predict, this process): {reference:.3f} s")
    print(f"pipeline time beyond the quiet period, p50: {percentile(beyond_quiet, 50):.2f} s "
          f"= {percentile(beyond_quiet, 50) / reference:.1f}x the model alone")


if __name__ == "__main__":
    main()
