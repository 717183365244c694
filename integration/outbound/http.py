"""Reports pushed over HTTP: a FHIR transaction Bundle to an EHR's FHIR server, a signed JSON event to a webhook.

FHIR: POST [base] with the transaction Bundle (FHIR R4 http.html#transaction), with the
destination's credentials (none, bearer token RFC 6750, HTTP Basic). Webhook: POST the event,
signed with HMAC-SHA256 of the exact body when the destination has a secret.
Answers (RFC 9110 15): 2xx -> sent. 408 and 429 (the server asks us to come back) and 5xx, like
timeouts and refused connections, -> retried with backoff. Any other 4xx -> dead at once: the
same request would be refused again.
"""

import hashlib
import hmac
import logging
from collections.abc import Generator
from functools import partial
from http import HTTPStatus

import httpx

from integration.config import IntegrationSettings
from integration.errors import DeliveryFailed
from integration.outbound.deliveries import QUEUE, DueDelivery, Reply, failed
from integration.outbound.engine import Transport
from integration.outbound.target import Target

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-DoctorAI-Signature"
FHIR_JSON = "application/fhir+json"


def auth(options: dict[str, str]) -> httpx.Auth | None:
    """The credentials a "fhir" destination's options name: none, a bearer token or HTTP Basic."""
    kind = options.get("auth", "none")
    if kind == "bearer":
        return _Bearer(options.get("token", ""))
    if kind == "basic":
        return httpx.BasicAuth(options.get("username", ""), options.get("password", ""))
    return None


class _Bearer(httpx.Auth):
    """RFC 6750 2.1: the token in the Authorization header."""

    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def signature(secret: str, body: bytes) -> str:
    """The webhook signature header's value: HMAC-SHA256 of the exact body, hex (as GitHub's X-Hub-Signature-256)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def status_reason(code: int) -> str:
    """`HTTP <code> <our phrase for it>`: what a failed delivery records of an answer.

    Never the peer's body nor its reason phrase: the delivery queue and the admin API show delivery
    errors, so a peer's words there would be a read channel into whatever a destination points at.
    """
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "non-standard status"
    return f"HTTP {code} {phrase}"


def _outcome(response: httpx.Response) -> str:
    if response.is_success:
        return str(response.status_code)
    detail = status_reason(response.status_code)
    retriable = response.status_code in (408, 429) or response.status_code >= 500
    raise DeliveryFailed(detail, retriable=retriable, reached=True)


async def post_fhir(client: httpx.AsyncClient, options: dict[str, str], payload: str) -> str:
    """POST a transaction Bundle to the server's base (FHIR R4 http.html#transaction); the HTTP status when 2xx."""
    return await _post(
        client,
        options.get("base_url", "").rstrip("/"),
        payload.encode(),
        {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        auth(options),
    )


async def post_webhook(client: httpx.AsyncClient, options: dict[str, str], payload: str) -> str:
    """POST the JSON event, signed with the destination's secret when it has one."""
    body = payload.encode()
    headers = {"Content-Type": "application/json"}
    if options.get("secret"):
        headers[SIGNATURE_HEADER] = signature(options["secret"], body)
    return await _post(client, options.get("url", ""), body, headers, None)


async def _post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], credentials: httpx.Auth | None
) -> str:
    if not url:
        raise DeliveryFailed("the destination has no URL configured", retriable=False)
    try:
        # Streamed and closed unread: only the status counts, and a body is never held in memory.
        async with client.stream(
            "POST",
            url,
            content=body,
            headers=headers,
            auth=credentials if credentials is not None else httpx.USE_CLIENT_DEFAULT,
        ) as response:
            return _outcome(response)
    except httpx.HTTPError as exc:
        # No connection at all (refused, TLS handshake, connect timeout) is what the circuit breaker counts.
        unreachable = isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
        reached = False if unreachable else None
        raise DeliveryFailed(f"POST {url} failed: {type(exc).__name__}", retriable=True, reached=reached) from exc


class Client:
    """One FHIR server's or webhook's HTTP client, kept while its destination's task runs."""

    def __init__(self, target: Target, *, timeout: float) -> None:
        self.target = target
        self.options = dict(target.options)
        self.post = post_fhir if target.kind == "fhir" else post_webhook
        self.client = httpx.AsyncClient(timeout=timeout)

    async def send(self, item: DueDelivery) -> Reply:
        """POST one delivery; the answer's status says sent, retried or dead."""
        try:
            status = await self.post(self.client, self.options, item.payload)
        except DeliveryFailed as exc:
            return failed(exc)
        log.info("delivery %d to %s: HTTP %s", item.id, self.target.name, status)
        return Reply(sent=True, reached=True)

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()


def transport(settings: IntegrationSettings) -> Transport[DueDelivery, Reply]:
    """FHIR and webhook destinations: the deliveries queue, one HTTP client each."""
    return Transport(QUEUE, partial(Client, timeout=settings.outbound_ack_timeout_seconds))
