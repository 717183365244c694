"""An HTTP endpoint in a thread for outbound tests: records every request, answers as scripted."""

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (method, path, body) -> (status, JSON body)
Script = Callable[[str, str, bytes], tuple[int, dict[str, object]]]


@dataclass(frozen=True)
class Request:
    """One request as it arrived."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Endpoint:
    """The running endpoint: its base URL and what it got."""

    url: str
    requests: list[Request] = field(default_factory=list)


def capability_statement(method: str, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    """A FHIR server that answers /metadata and accepts everything else."""
    if method == "GET" and path.endswith("/metadata"):
        return 200, {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
        }
    return 200, {"resourceType": "Bundle", "type": "transaction-response"}


@contextmanager
def http_endpoint(script: Script = capability_statement) -> Iterator[Endpoint]:
    """Serve `script` on a free loopback port until the block ends."""
    endpoint = Endpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            endpoint.requests.append(Request(self.command, self.path, dict(self.headers.items()), body))
            status, answer = script(self.command, self.path, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
