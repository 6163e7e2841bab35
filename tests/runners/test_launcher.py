"""The job launcher (app/runners/_launcher.py) on its own: its answers are JSON the service
parses, whatever characters they carry, and its start-up loads no slow module."""

from __future__ import annotations

import json
import marshal
import subprocess
import sys

import pytest

from app.runners import _launcher
from app.runners.job_sandbox import LAUNCHER_SOURCE, _frame

TEXTS = [
    "",
    'a "quote", a \\ backslash, a newline\n, a tab\t, a NUL\0, a DEL\x7f, \x1b[31m',
    "non-ASCII: é ü 中文 \u2028 \ufeff \uffff",
    "above the BMP: 😀 \U00010000 \U0010ffff",
    "lone surrogates (a path's undecodable bytes): \udcff \udc80 x \ud800 y",
]


@pytest.mark.parametrize("text", TEXTS)
def test_an_answer_is_a_frame_of_printable_ascii_json(text: str) -> None:
    frame = _launcher.encode({"error": text, "errno": 2})
    body = frame[4:]
    assert int.from_bytes(frame[:4], "big") == len(body)
    assert all(0x20 <= byte < 0x7F for byte in body), body
    assert json.loads(body) == {"error": text, "errno": 2}


def test_every_character_round_trips_through_the_services_parser() -> None:
    # Surrogates apart: one next to another would make a pair (as json.dumps would).
    points = range(0x110000)
    text = "".join(chr(c) for c in points if not 0xD800 <= c < 0xE000 and (c < 0x800 or c % 7 < 3))
    assert json.loads(_launcher.encode({"error": text})[4:]) == {"error": text}


def test_numbers() -> None:
    for message in ({"ready": 1}, {"started": 4242}, {"exit": -9}, {"exit": 0}):
        assert json.loads(_launcher.encode(message)[4:]) == message


def test_an_order_is_marshal_version_4_of_plain_values() -> None:
    order = {"op": "run", "argv": ["sh", "-c", "é\0"], "cwd": "/w", "env": {"A": "\ud800"}}
    frame = _frame(order)
    assert frame[4:] == marshal.dumps(order, 4)
    assert marshal.loads(frame[4:]) == order


def test_the_launcher_loads_no_slow_module() -> None:
    """Its start-up is on every job's first step: json (re), typing, enum (the Python layers
    of signal and socket), ctypes' and struct's Python layers, contextlib stay out."""
    probe = (
        "import sys\n"
        "exec(compile(sys.stdin.read(), 'launcher', 'exec'), {'__name__': 'launcher'})\n"
        "print(' '.join(sys.modules))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],
        input=LAUNCHER_SOURCE,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    slow = {"json", "re", "typing", "enum", "signal", "socket", "selectors", "ctypes", "struct"}
    assert slow.isdisjoint(loaded), sorted(slow.intersection(loaded))
    assert "contextlib" not in loaded and "__future__" not in loaded
