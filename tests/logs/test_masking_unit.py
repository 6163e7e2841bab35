"""Masking and line assembly, without a database (pure code)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.logs.masking import (
    MAX_VALUE_PIECE,
    LineAssembler,
    Masker,
    masked_variables,
    secret_names,
)


def _feed(masker: Masker, parts: list[bytes], max_partial: int = 64 * 1024) -> str:
    assembler = LineAssembler(masker, max_partial)
    return "".join(assembler.feed(p) for p in parts) + assembler.close()


def test_secret_split_across_writes_is_masked() -> None:
    masker = Masker(["hunter22"])
    assert _feed(masker, [b"pass=hun", b"ter22 ok\n"]) == "pass=*** ok\n"


def test_secret_split_across_utf8_boundaries() -> None:
    masker = Masker(["pässwörd"])
    data = "x pässwörd y\n".encode()
    assert _feed(masker, [data[:4], data[4:7], data[7:]]) == "x *** y\n"


def test_secret_across_a_forced_cut_of_an_endless_line() -> None:
    masker = Masker(["SECRETVALUE"])
    line = b"a" * 95 + b"SECRETVALUE" + b"b" * 50
    out = _feed(masker, [line[i : i + 7] for i in range(0, len(line), 7)], max_partial=100)
    assert "SECRET" not in out
    assert out == "a" * 95 + "***" + "b" * 50


def test_multiline_secret_masks_each_line_and_short_values_are_kept() -> None:
    masker = Masker(["line-one\nline-two\nab"])
    out = _feed(masker, [b"line-one\nline-two\nab\n"])
    assert out == "***\n***\nab\n"


def test_add_mask_registers_value() -> None:
    masker = Masker()
    out = _feed(masker, [b"::add-mask::runtime-secret\nuse runtime-secret now\n"])
    assert out == "::add-mask::***\nuse *** now\n"


def test_variable_names_and_api_masking() -> None:
    variables = {"API_TOKEN": "t0ken-value", "db_password": "pw-value", "ssh_key": "k", "NAME": "x"}
    assert secret_names(variables) == {"API_TOKEN", "db_password", "ssh_key"}
    assert masked_variables(variables) == {
        "API_TOKEN": "***",
        "db_password": "***",
        "ssh_key": "***",
        "NAME": "x",
    }


def test_invalid_utf8_replaced() -> None:
    assert _feed(Masker(), [b"\xff ok\n"]) == "\ufffd ok\n"


def test_held_bytes_counts_raw_bytes_of_the_partial_line() -> None:
    assembler = LineAssembler(Masker(), 64 * 1024)
    assert assembler.feed(b"done\npart\xff") == "done\n"
    assert assembler.held_bytes == 5
    assert assembler.feed("ial \u00e9"[:4].encode() + b"\xc3") == ""
    assert assembler.held_bytes == 10  # "part\xff" + "ial " + the first byte of "é"
    assert assembler.feed(b"\xa9\n") == "part\ufffdial \u00e9\n"
    assert assembler.held_bytes == 0


def _line_by_line(values: list[str], text: str) -> str:
    """The reference: every line through mask_line, as mask_text did for every chunk."""
    masker = Masker(values)
    return "".join(masker.mask_line(line) for line in text.splitlines(keepends=True))


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.text(alphabet="ab\r\x0c\u2028 x", min_size=1, max_size=6), max_size=20),
    text=st.text(alphabet="ab\r\n\x0c\u2028 x:", max_size=80),
)
def test_chunk_masking_equals_line_by_line_masking(values: list[str], text: str) -> None:
    # Values with and without line breaks other than "\n", overlapping ones, more values than
    # the substring pre-check handles: the whole-chunk pass must give the per-line result.
    assert Masker(values).mask_text(text) == _line_by_line(values, text)


def test_many_values_are_all_masked() -> None:
    values = [f"secret-number-{i:03d}" for i in range(40)]
    text = "".join(f"line {v} end\n" for v in reversed(values))
    out = Masker(values).mask_text(text)
    assert "secret" not in out
    assert out == "line *** end\n" * 40


def test_value_with_a_form_feed_is_masked_within_its_line_only() -> None:
    # "\x0c" ends a line for str.splitlines: such a value is never seen whole in one line, as
    # before; the other values on the chunk are still masked.
    masker = Masker(["ab\x0ccd", "other-secret"])
    assert masker.mask_text("x ab\x0ccd other-secret\n") == "x ab\x0ccd ***\n"


def test_secret_whole_at_a_forced_cut_of_an_endless_line() -> None:
    # The line passes max_partial with the secret complete but just before the end: the cut
    # (which keeps the last len(secret) - 1 characters back) must not split it.
    masker = Masker(["SECRETVALUE"])
    line = b"a" * 85 + b"SECRETVALUE" + b"b" * 10
    out = _feed(masker, [line[:100], line[100:]], max_partial=100)
    assert out == "a" * 85 + "***" + "b" * 10


@settings(max_examples=200, deadline=None)
@given(
    head=st.integers(min_value=0, max_value=150),
    step=st.integers(min_value=1, max_value=40),
    value=st.sampled_from(["SECRETVALUE", "abc\x0cdefg", "hunter22"]),
)
def test_forced_cuts_never_split_a_secret(head: int, step: int, value: str) -> None:
    masker = Masker([value, "other-secret"])
    line = ("a" * head + value + "b" * 30 + "other-secret" + "c" * 40).encode()
    out = _feed(masker, [line[i : i + step] for i in range(0, len(line), step)], max_partial=64)
    assert out == _line_by_line([value, "other-secret"], line.decode())


def test_add_mask_value_is_decoded_like_the_command() -> None:
    # `%25` is `%` and `%0A` a newline in a command's message: the step prints the decoded value.
    masker = Masker()
    out = _feed(masker, [b"::add-mask::my%25secret\n", b"  ::add-mask::one%0Atwo-two\n"])
    out += _feed(masker, [b"my%secret one two-two my%25secret\n"])
    assert out.replace("::add-mask::***\n", "") == "*** one *** my%25secret\n"


@given(split=st.integers(min_value=1, max_value=179_999))
@settings(max_examples=25, deadline=None)
def test_an_add_mask_line_longer_than_the_hold_never_reaches_the_log(split: int) -> None:
    # Held lines are released in pieces past max_partial; an `::add-mask::` line must not be:
    # its value's tail would be stored unmasked. Read in two pieces cut anywhere.
    # Not a run of one character: a value longer than MAX_VALUE_PIECE is masked piece by piece,
    # and a piece of a repetitive value could match at another offset.
    digits = "".join(str(n) for n in range(100_000, 125_000))
    value = f"{digits[:80_000]}%25{digits[80_000:]}".encode()
    line = b"::add-mask::" + value + b"\nafter\n"
    masker = Masker()
    out = _feed(masker, [line[:split], line[split:]], max_partial=64 * 1024)
    # Whole in one read, the line is masked as a line (the command parser then drops it).
    assert out.replace("::add-mask::***\n", "") == "after\n"
    decoded = value.decode().replace("%25", "%")
    assert _feed(masker, [f"x{decoded}y\n".encode()]) == "x***y\n"


def test_a_value_longer_than_a_piece_is_masked_in_pieces() -> None:
    # The longest value is what an endless line holds back: values are cut into pieces of
    # MAX_VALUE_PIECE, each masked, so a value printed whole is still masked whole.
    value = "".join(chr(65 + i % 26) for i in range(3 * MAX_VALUE_PIECE + 5))
    masker = Masker([value])
    assert masker.longest == MAX_VALUE_PIECE
    out = _feed(masker, [f"[{value}]\n".encode()])
    assert out.replace("***", "") == "[]\n"
    assert value[:10] not in out and value[-10:] not in out
