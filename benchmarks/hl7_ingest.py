"""HL7 v2 ingest rate: messages per second acknowledged by our MLLP listener (raw bytes in object
storage, row + FHIR Patient + outbox + audit committed, then the ACK), against a reference measured
in the same run: a plain asyncio MLLP server that ACKs every message without storing anything.

Both servers run as their own processes; the same client (python-hl7's MLLPClient on several
connections) sends the same ADT^A04 messages (distinct control ids and patients) to each.

    .venv/bin/python benchmarks/hl7_ingest.py --messages 400 --connections 4
"""

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import hl7.client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from doctorai.stack import (
    StackConfig,
    engine_env,
    free_ports,
    http_ok,
    prepare_database,
    start_object_store,
    tcp_open,
)
from doctorai.supervisor import Supervisor  # noqa: E402,E501

ROOT = Path(__file__).resolve().parent.parent


def reference_server(port: int) -> None:
    """The reference: frame, answer AA with MSA-2 = MSH-10, store nothing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.readuntil(b"\x1c\r")
                message = data[data.index(b"\x0b") + 1 : -2]
                msh = message.split(b"\r", 1)[0].split(b"|")
                ack = b"MSH|^~\\&|REF|REF|||20240101000000||ACK|1|P|2.5\rMSA|AA|" + msh[9] + b"\r"
                writer.write(b"\x0b" + ack + b"\x1c\r")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def message(i: int) -> bytes:
    """An ADT^A04 v2.5 for patient P<i>, control id B<i>."""
    return (
        f"MSH|^~\\&|BENCH|HOSP|DOCTORAI|AI|20240301090000||ADT^A04^ADT_A01|B{i:07d}|P|2.5\r"
        f"EVN|A04|20240301090000\r"
        f"PID|1||P{i:07d}^^^HOSP^MR||Doe^Jane^{i}||19800115|F|||12 High St^^Leeds^^LS1 1AA^GB\r"
        f"PV1|1|O|OPD^^^HOSP\r"
    ).encode()


def run_client(port: int, messages: list[bytes], connections: int) -> float:
    """Send every message (split over `connections`, each waiting for its ACK); return messages per second."""
    failures: list[str] = []

    def worker(part: list[bytes]) -> None:
        with hl7.client.MLLPClient("127.0.0.1", port) as client:
            for m in part:
                answer = client.send_message(m)
                if b"MSA|AA|" not in answer:
                    failures.append(answer.decode(errors="replace")[:200])

    parts = [messages[i::connections] for i in range(connections)]
    threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} messages not acknowledged AA, e.g. {failures[0]}")
    return len(messages) / elapsed


def main() -> None:
    """Measure both servers in one run and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--database-url", default="", help="default: SQLite in the temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = StackConfig(var_dir=Path(tmp), ports=free_ports(), database_url=args.database_url)
        supervisor = Supervisor(config.var_dir / "logs")
        try:
            start_object_store(config, supervisor)
            prepare_database(config)
            ref_port = free_ports().mllp
            supervisor.start(
                "reference", [sys.executable, __file__, "--reference-port", str(ref_port)], env={},
                ready=lambda: tcp_open(ref_port), cwd=ROOT,
            )
            supervisor.start(
                "mllp", [sys.executable, "-m", "hl7_listener"], env=engine_env(config),
                ready=lambda: http_ok(f"http://127.0.0.1:{config.ports.mllp_metrics}/metrics"), cwd=ROOT,
            )
            warm = [message(9_000_000 + i) for i in range(20)]
            run_client(ref_port, warm, 1)
            run_client(config.ports.mllp, warm, 1)  # hl7apy loads its version tables on first use
            batch = [message(i) for i in range(args.messages)]
            reference = run_client(ref_port, batch, args.connections)
            ours = run_client(config.ports.mllp, batch, args.connections)
        finally:
            supervisor.stop_all()
    database = "PostgreSQL" if args.database_url.startswith("postgresql") else "SQLite"
    print(f"{args.messages} ADT^A04 messages over {args.connections} connections ({database}, rclone S3)")
    print(f"  reference (ACK without storing): {reference:8.1f} messages/s")
    print(f"  DoctorAI (durable ACK):          {ours:8.1f} messages/s")
    print(f"  ratio DoctorAI / reference:      {ours / reference:8.3f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--reference-port":
        reference_server(int(sys.argv[2]))
    else:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        main()
