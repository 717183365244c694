"""How uvicorn serves the API: a cap on connections and deadlines for slow clients (issue 18).

uvicorn waits for a request's head for ever: a client sending one header byte every few seconds
holds its connection, and a few hundred such clients hold every file descriptor the process has
(slowloris). Here a connection must deliver each request head within `http_header_timeout_seconds`
(from when it connects, or from the end of the previous answer), or it gets 408 and is closed;
connections beyond `http_max_connections` get 503 and are closed at once; and a body whose next
piece does not come within `http_body_timeout_seconds` is answered 408 by `BodyDeadline`.
"""

import asyncio
from typing import Any

import h11
import uvicorn
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from fhir_api.config import ApiSettings
from fhir_api.responses import refusal
from fhir_api.security import ASGIApp, Message, Receive, Scope, Send

# Raw answers for connections refused before any request exists (RFC 9110 sections 15.5.9, 15.6.4).
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
_FULL = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a cap on connections."""

    header_timeout = 10.0
    max_connections = 500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_started = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; refuse it past the cap, else start the clock for its first head."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_FULL)
            transport.close()
            return
        self._await_head()

    def data_received(self, data: bytes) -> None:
        """Feed h11; once a whole head has arrived (h11 left IDLE), its clock stops."""
        self._head_started = True
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._stop_clock()

    def on_response_complete(self) -> None:
        """After an answer, a kept-open connection has the same time for its next head."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._stop_clock()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._stop_clock()
        self._head_started = False
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_overdue)

    def _stop_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_started:
            self.transport.write(_TIMED_OUT)  # an idle kept-open connection is just closed
        self.transport.close()


def protocol(settings: ApiSettings) -> type[GuardedH11Protocol]:
    """The protocol class with these settings' deadline and cap (uvicorn builds one per connection)."""
    return type(
        "ConfiguredH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout": settings.http_header_timeout_seconds, "max_connections": settings.http_max_connections},
    )


def config(app: ASGIApp, settings: ApiSettings) -> uvicorn.Config:
    """uvicorn's configuration of the API: h11 with the guards above, keep-alive, and no access log."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        http=protocol(settings),
        timeout_keep_alive=settings.http_keep_alive_seconds,
        # uvicorn answers 503 once connections or running requests reach this; it counts the
        # connection asking, hence the one more (the cap itself is enforced on connect above).
        limit_concurrency=settings.http_max_connections + 1,
        log_config=None,
        # No access log: request URLs carry patient identifiers (search parameters), which logs must not hold.
        access_log=False,
    )


class BodyTimeout(HTTPException):
    """The client stopped sending its body: 408, answered in the API's format and with the connection closed."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"no part of the request body arrived for {seconds:g} s")


class BodyDeadline:
    """Bounds the wait for each piece of a request body; past it, 408 and the connection is closed."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_pending, timed_out, started = True, False, False

        async def timed() -> Message:
            nonlocal body_pending, timed_out
            if not body_pending:
                return await receive()  # waiting for a disconnect is not waiting for the client
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                timed_out = True
                raise BodyTimeout(self.seconds) from None
            body_pending = message["type"] == "http.request" and bool(message.get("more_body", False))
            return message

        async def closing(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if timed_out:
                    # The rest of the body may still come: only a new connection can start clean.
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, timed, closing)
        except* BodyTimeout as group:
            # Read outside a route (a middleware), so no handler answered it.
            if started:
                raise
            timeout = group.exceptions[0]
            detail = timeout.detail if isinstance(timeout, BodyTimeout) else "the request body did not arrive"
            await refusal(scope["path"], 408, "timeout", detail, headers={"Connection": "close"})(scope, receive, send)
