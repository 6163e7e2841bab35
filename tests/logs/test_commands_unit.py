"""Workflow commands in step output: the chunk pre-check gives what line-by-line parsing gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.workflow.commands import CommandParser

PIECES = st.sampled_from(
    [
        "::error::boom",
        "::warning file=a.py,line=3::careful",
        "::set-output name=x::1",
        "::stop-commands::tok",
        "::tok::",
        "::add-mask::hidden-value",
        "std::vector",
        "a::b",
        "::",
        ":",
        " ",
        "\t",
        "\xa0",
        "\n",
        "\r",
        "\r\n",
        "\x0c",
        "\u2028",
        "x",
        "::debug::d",
    ]
)


@settings(max_examples=500, deadline=None)
@given(chunks=st.lists(st.lists(PIECES, max_size=12).map("".join), max_size=4))
def test_precheck_matches_line_by_line_parsing(chunks: list[str]) -> None:
    fast, slow = CommandParser(), CommandParser()
    for text in chunks:
        assert fast.process(text) == slow._lines(text)
        assert fast._stop_token == slow._stop_token


def test_rust_paths_are_kept_and_commands_after_them_still_apply() -> None:
    parser = CommandParser()
    text = "   Compiling foo::bar v0.1\nerror[E0425]: std::io::x\n"
    kept, effects = parser.process(text)
    assert kept == text and effects.annotations == []
    kept, effects = parser.process("note: a::b\n  ::error file=src/a.rs::bad\n")
    assert [a.message for a in effects.annotations] == ["bad"]
    assert kept == "note: a::b\n  ::error file=src/a.rs::bad\n"
