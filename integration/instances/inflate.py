"""Deflated data sets inflated with a bound (PS3.5 A.5: Deflated Explicit VR Little Endian).

A deflated data set is a raw deflate stream (RFC 1951) of an Explicit VR Little Endian data set.
Deflate compresses runs of zeros some thousand to one, so a few hundred KB on the wire can
inflate to gigabytes: the stream is inflated in bounded steps into a spooled file (memory up to
`memory_limit`, then disk) and refused once it passes `limit` bytes, never inflated whole.
"""

import tempfile
import zlib
from typing import IO, BinaryIO

from integration.errors import CannotUnderstand

DEFLATED = "1.2.840.10008.1.2.1.99"
# Bytes read from the deflated stream, and most bytes inflated, per step.
_STEP = 1 << 16


def inflated(f: BinaryIO, *, limit: int, memory_limit: int) -> IO[bytes]:
    """The data set deflated from `f`'s position to its end, inflated, in a file positioned at its start.

    Raises CannotUnderstand once it inflates past `limit` bytes (a deflate bomb) or is not a deflate stream.
    """
    out = tempfile.SpooledTemporaryFile(max_size=memory_limit, prefix="doctorai-inflated-")  # noqa: SIM115 (returned open)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    size = 0
    try:
        pending = f.read(_STEP)
        while pending and not inflater.eof:
            # max_length bounds what one call makes; what it leaves is in unconsumed_tail.
            chunk = inflater.decompress(pending, _STEP)
            size += len(chunk)
            if size > limit:
                raise CannotUnderstand(f"deflated data set inflates past {limit} bytes")
            out.write(chunk)
            pending = inflater.unconsumed_tail or f.read(_STEP)
        tail = inflater.flush(_STEP)
        if size + len(tail) > limit:
            raise CannotUnderstand(f"deflated data set inflates past {limit} bytes")
        out.write(tail)
    except zlib.error as exc:
        out.close()
        raise CannotUnderstand("deflated data set is not a deflate stream") from exc
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out
