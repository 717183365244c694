"""MLLP framing (HL7 v2 Appendix C, Minimal Lower Layer Protocol release 2).

A block is <VT> message <FS><CR>. Both the inbound listener (hl7_listener.server) and the outbound
sender (integration.outbound.mllp) frame and unframe through these functions.
"""

import asyncio
from dataclasses import dataclass

from integration.errors import MessageTooLarge

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
