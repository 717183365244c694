"""MLLP framing (HL7 v2 Appendix C, Minimal Lower Layer Protocol release 2) and a one-message exchange.

A block is <VT> message <FS><CR>. Both the inbound listener (hl7_listener.server) and the outbound
sender (integration.outbound) frame and unframe through these functions.
"""

import asyncio
from dataclasses import dataclass

from integration.errors import DeliveryFailed, FramingError, MessageTooLarge

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


def frame(message: bytes) -> bytes:
    """Wrap one message in an MLLP block."""
    return START_BLOCK + message + END_BLOCK


@dataclass(frozen=True)
class Block:
    """What one read gave: bytes outside any block (framing noise) and the message, if a block ended."""

    junk: bytes
    message: bytes | None


def unframe(data: bytes) -> Block:
    """Split bytes ending in FS CR into leading junk and the message of the last started block.

    A block that restarts (a second VT before FS CR) abandons the first: its bytes count as junk.
    """
    body = data.removesuffix(END_BLOCK)
    start = body.rfind(START_BLOCK)
    if start < 0:
        return Block(junk=data, message=None)
    return Block(junk=body[:start], message=body[start + 1 :])


async def read_block(reader: asyncio.StreamReader) -> Block:
    """Read up to the next FS CR. The reader's own limit bounds the size (MessageTooLarge beyond it).

    Raises asyncio.IncompleteReadError when the peer closes, with the partial bytes.
    """
    try:
        data = await reader.readuntil(END_BLOCK)
    except asyncio.LimitOverrunError as exc:
        raise MessageTooLarge(f"no end of block within {exc.consumed} bytes") from exc
    return unframe(data)


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
        raise FramingError(f"the answer acknowledges {msa[2]!r}, not {control_id!r}")
    err = next((s for s in segments if s[0] == "ERR"), None)
    detail = separator.join(err[1:]) if err else (msa[3] if len(msa) > 3 else "")
    return msa[1], detail


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
