from __future__ import annotations

import pytest

from app.queue.base import InvalidMessage, decode_build_id


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"42", 42),
        (b'{"build_id": 42}', 42),
        (b' {"build_id": 42, "pipeline_id": 7} ', 42),
        (b"9007199254740993", 9007199254740993),
    ],
)
def test_decode_accepts_a_build_id(body: bytes, expected: int) -> None:
    assert decode_build_id(body) == expected


@pytest.mark.parametrize(
    "body",
    [
        b'"x"',
        b"x",
        b"-1",
        b"0",
        b"true",
        b"{}",
        b'{"build_id": "42"}',
        b'{"build_id": true}',
        b"4.2",
        b"[42]",
        b"null",
        b"",
        b'{"build_id": 42',
        b"\xff\xfe",
    ],
)
def test_decode_rejects_what_is_not_a_build_id(body: bytes) -> None:
    with pytest.raises(InvalidMessage):
        decode_build_id(body)


def test_invalid_message_names_the_body() -> None:
    with pytest.raises(InvalidMessage, match="nope"):
        decode_build_id(b'"nope"')
