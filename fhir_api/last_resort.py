"""The answer to an error nobody expected: a 500 in the API's own format, inside the middleware stack.

Starlette answers an unhandled exception in its outermost ServerErrorMiddleware, outside every
middleware we add: plain text, no security headers, and, because it raises again, uvicorn then
drops the kept-open connection. This middleware sits just inside SecurityHeaders, so the answer
is an OperationOutcome under /fhir and problem details elsewhere (RFC 9457), with the headers,
and the connection stays open. The log gets the traceback's frames and the exception's type,
never its message or the request's body: either may quote patient data.
"""

import logging
import traceback
from collections.abc import Iterator

from fhir_api.responses import outcome_response, problem_response
from fhir_api.security import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
_DIAGNOSTICS = "the server met an unexpected error; it has been logged"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _frames(exc: BaseException) -> str:
    """The traceback of `exc` and of the exceptions behind it, with types but without messages."""
    parts = []
    for link in _chain(exc):
        parts.append(f"{type(link).__module__}.{type(link).__qualname__}\n")
        parts += traceback.format_tb(link.__traceback__)
    return "".join(parts)


class LastResort:
    """Turns an exception no handler took into a 500 the client can read; re-raises only mid-answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            path: str = scope.get("path", "")
            log.error("unexpected error answering %s %s:\n%s", scope.get("method", ""), path, _frames(exc))
            if started:
                raise  # half an answer is out: only closing the connection can tell the client
            if path == "/fhir" or path.startswith("/fhir/"):
                response = outcome_response(500, "exception", _DIAGNOSTICS)
            else:
                response = problem_response(500, _DIAGNOSTICS)
            await response(scope, receive, send)
