"""HL7 v2 over MLLP to a destination: connect (TCP or TLS), send one message, read its acknowledgement.

Original-mode rules (HL7 v2 2.9.2): AA (or the commit CA) -> sent. AR/CR (rejected: the same
message would be rejected again) -> dead at once. AE/CE, no answer within the timeout, a broken
connection or an answer that is not an ACK to this message -> retried. One message at a time:
the next goes only after this one's ACK. Framing is integration.mllp's (HL7 v2 Appendix C).
"""

import asyncio
import ssl
from functools import partial

from integration.config import IntegrationSettings
from integration.errors import DeliveryFailed, FramingError
from integration.mllp import frame, read_block
from integration.outbound.deliveries import QUEUE, DueDelivery, Reply, failed
from integration.outbound.engine import Transport
from integration.outbound.target import Target

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def ack_code(ack: bytes, *, control_id: str) -> tuple[str, str]:
    """MSA-1 and the first ERR or MSA-3 text of an acknowledgement to the message `control_id` (HL7 v2 2.9).

    Raises FramingError when the answer is not an acknowledgement of that message.
    """
    text = ack.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r")
    if not text.startswith("MSH") or len(text) < 8:
        raise FramingError("the answer is not an HL7 message")
    separator = text[3]
    segments = [s.split(separator) for s in text.split("\r") if s]
    msa = next((s for s in segments if s[0] == "MSA"), None)
    if msa is None or len(msa) < 3:
        raise FramingError("the answer has no MSA segment")
    if msa[2] != control_id:
        raise FramingError(f"the answer acknowledges another message, not {control_id!r}")
    err = next((s for s in segments if s[0] == "ERR"), None)
    detail = separator.join(err[1:]) if err else (msa[3] if len(msa) > 3 else "")
    return msa[1], detail


# HL7 v2 table 0008 (acknowledgment code), in our words.
_REFUSALS = {
    "AE": "the receiver had an error processing the message",
    "AR": "the receiver rejected the message",
    "CE": "the receiver had an error accepting the message",
    "CR": "the receiver rejected the message",
}


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes, *, timeout: float
) -> bytes:
    """Send one message and return the message of the block that answers it.

    Raises DeliveryFailed (retriable) when the peer closes or does not answer within `timeout`.
    """
    writer.write(frame(message))
    try:
        await asyncio.wait_for(writer.drain(), timeout)
        while True:
            block = await asyncio.wait_for(read_block(reader), timeout)
            if block.message is not None:
                return block.message
    except TimeoutError as exc:
        raise DeliveryFailed(f"no acknowledgement within {timeout:.0f}s", retriable=True) from exc
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise DeliveryFailed(f"connection lost: {exc!r}", retriable=True) from exc


async def _connect(target: Target, timeout: float) -> Streams:
    context = ssl.create_default_context(cafile=target.option("ca_file") or None) if target.tls else None
    try:
        return await asyncio.wait_for(asyncio.open_connection(target.host, target.port, ssl=context), timeout)
    except (OSError, TimeoutError) as exc:
        raise DeliveryFailed(
            f"cannot connect to {target.host}:{target.port}: {exc!r}", retriable=True, reached=False
        ) from exc


async def _send(streams: Streams, item: DueDelivery, timeout: float) -> str:
    """Send one message; its ACK code when AA/CA, else DeliveryFailed."""
    answer = await exchange(*streams, item.payload.encode(), timeout=timeout)
    try:
        code, _detail = ack_code(answer, control_id=item.control_id)
    except FramingError as exc:
        raise DeliveryFailed(str(exc), retriable=True, reached=True) from exc
    if code in ("AA", "CA"):
        return code
    retriable = code not in ("AR", "CR")
    # The ACK code and our words for it, not the peer's ERR/MSA-3 text: delivery errors are shown by
    # the admin API, and a peer's words there would be a read channel (issue 18).
    raise DeliveryFailed(f"{code}: {_REFUSALS.get(code, 'not acknowledged')}", retriable=retriable, ack_code=code, reached=True)


class Connection:
    """One MLLP destination's connection: opened for the first message, and again after a failure."""

    def __init__(self, target: Target, *, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._streams: Streams | None = None

    async def send(self, item: DueDelivery) -> Reply:
        """Send one message and wait for its ACK; a failure closes the connection."""
        try:
            if self._streams is None:
                self._streams = await _connect(self.target, self.timeout)
            code = await _send(self._streams, item, self.timeout)
        except DeliveryFailed as exc:
            await self.close()
            return failed(exc)
        return Reply(sent=True, code=code, reached=True)

    async def close(self) -> None:
        """Close the connection, if open."""
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def transport(settings: IntegrationSettings) -> Transport[DueDelivery, Reply]:
    """MLLP destinations: the deliveries queue, one connection each."""
    return Transport(QUEUE, partial(Connection, timeout=settings.outbound_ack_timeout_seconds))
