"""MLLP framing (HL7 v2 Appendix C): property tests over arbitrary messages and arbitrary TCP chunking."""

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.errors import MessageTooLarge
from integration.mllp import frame, read_block, unframe

# Message bytes never contain the block characters (VT, FS); anything else may appear.
BODY = st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"")).filter(bool)


async def _read_all(chunks: list[bytes], limit: int = 2**16) -> list[bytes | None]:
    reader = asyncio.StreamReader(limit=limit)
    for chunk in chunks:
        reader.feed_data(chunk)
    reader.feed_eof()
    out: list[bytes | None] = []
    while True:
        try:
            out.append((await read_block(reader)).message)
        except asyncio.IncompleteReadError:
            return out


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(BODY, min_size=1, max_size=5), cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_any_split_of_framed_messages_reads_back_the_messages(messages: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert asyncio.run(_read_all(chunks)) == messages


@given(junk=BODY, message=BODY)
def test_junk_before_a_block_is_set_apart(junk: bytes, message: bytes) -> None:
    block = unframe(junk + frame(message))
    assert block.message == message and block.junk == junk


def test_restarted_block_keeps_the_second() -> None:
    block = unframe(b"\x0bhalf\x0bwhole\x1c\r")
    assert block.message == b"whole" and block.junk == b"\x0bhalf"


def test_oversize_block_is_refused() -> None:
    with pytest.raises(MessageTooLarge):
        asyncio.run(_read_all([frame(b"x" * 500)], limit=100))
