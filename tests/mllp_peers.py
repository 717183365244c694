"""HL7 peers for the tests, none of them our code: python-hl7's MLLPClient as the EHR/RIS sending to us,
a plain-socket client for what MLLPClient cannot send (bad framing), and a small asyncio MLLP
receiver that plays a destination answering our ORU^R01 messages by script.
"""

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hl7.client

DATA = Path(__file__).parent / "data" / "hl7"
VT, FS, CR = b"\x0b", b"\x1c", b"\x0d"


def sample(name: str) -> bytes:
    """One of the HL7 v2 samples in tests/data/hl7."""
    return (DATA / name).read_bytes()


def read_ack(sock: socket.socket) -> bytes:
    """Read one MLLP block from a socket, returning the message inside it (b"" when the peer closed)."""
    data = b""
    while not data.endswith(FS + CR):
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data[data.index(VT) + 1 : -2]


def send(port: int, *messages: bytes) -> list[bytes]:
    """Send messages on one connection with python-hl7's MLLP client, as an EHR interface would."""
    answers = []
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        client.socket.settimeout(30)
        for message in messages:
            first = client.send_message(message)
            while not first.endswith(FS + CR):
                more = client.socket.recv(65536)
                if not more:
                    break
                first += more
            answers.append(first[first.index(VT) + 1 : -2] if VT in first else first)
    return answers


def send_raw(port: int, data: bytes, *, context: ssl.SSLContext | None = None, answers: int = 1) -> list[bytes]:
    """Write raw bytes (framing of our choice) on one connection and read `answers` ACK blocks."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        sock = context.wrap_socket(raw, server_hostname="localhost") if context else raw
        try:
            sock.sendall(data)
            return [read_ack(sock) for _ in range(answers)]
        finally:
            sock.close()


def segment(message: bytes, name: str) -> list[str]:
    """The fields of the first segment `name` of an ER7 message (index = field number, MSH shifted by one)."""
    for line in message.decode().replace("\n", "\r").split("\r"):
        if line.startswith(name + "|"):
            return line.split("|")
    raise AssertionError(f"no {name} segment in {message!r}")


def wait_for(condition: Callable[[], bool], *, timeout: float = 60, what: str = "condition") -> None:
    """Poll until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Receiver:
    """An MLLP receiver in a thread: records every message and answers with `script(message)`'s ACK code."""

    def __init__(self, script: Callable[[bytes], str | None]) -> None:
        self.script = script
        self.received: list[bytes] = []
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ack(self, message: bytes, code: str) -> bytes:
        control_id = segment(message, "MSH")[9]
        return f"MSH|^~\\&|TESTEHR|HOSP|DOCTORAI|DOCTORAI|20240101000000||ACK^R01^ACK|A{control_id}|P|2.5.1\rMSA|{code}|{control_id}\r".encode()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                data = await reader.readuntil(FS + CR)
                message = data[data.index(VT) + 1 : -2]
                self.received.append(message)
                code = self.script(message)
                if code is None:  # no answer: the sender's timeout
                    continue
                writer.write(VT + self._ack(message, code) + FS + CR)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # its handler's read ends, and the handler with it
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def start(self) -> "Receiver":
        """Listen on a free port."""
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        """Stop listening."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def receiver(script: Callable[[bytes], str | None] = lambda _: "AA") -> Iterator[Receiver]:
    """A running Receiver for the duration of a with block."""
    peer = Receiver(script).start()
    try:
        yield peer
    finally:
        peer.stop()


class AckDroppingProxy:
    """A TCP relay that passes what the sender writes to the listener and drops what comes back.

    It stands for a network that loses the ACK: the sender sees its connection end without one.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            client, _ = self._server.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))

        def forward() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        def drop() -> None:
            try:
                while upstream.recv(65536):
                    pass  # the ACK is lost here
            except OSError:
                pass
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the other relay thread and sends FIN
                except OSError:
                    pass
                sock.close()

        for target in (forward, drop):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> None:
        """Stop accepting and wait for the relays."""
        self._server.close()
        for thread in self._threads:
            thread.join(10)
