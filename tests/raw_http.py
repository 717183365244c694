"""HTTP/1.1 over a plain socket, for tests that must see what the server does to the connection itself."""

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    """One response as read off the socket."""

    status: int
    headers: dict[str, str]
    body: bytes


def connect(base_url: str, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to the server of `base_url`; reads time out after `timeout` seconds."""
    parts = urlsplit(base_url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def send(sock: socket.socket, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
    """Write one request (with Content-Length when there is a body)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    all_headers = dict(headers or {})
    if body:
        all_headers.setdefault("Content-Length", str(len(body)))
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def read_answer(sock: socket.socket) -> Answer:
    """Read one response with a Content-Length body; ConnectionError when the server closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the server closed the connection after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection inside a body")
        rest += chunk
    return Answer(int(status_line.split()[1]), headers, rest[:length])


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes the connection (reads until EOF or the socket's time-out)."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
