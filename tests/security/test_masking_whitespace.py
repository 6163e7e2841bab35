"""Masking gaps (issue 10, item 12a): a secret with leading/trailing whitespace leaks its core
once a shell word-splits it; the stripped core is masked too unless it is trivially short."""

from __future__ import annotations

import httpx

from app.logs.masking import LineAssembler, Masker
from tests.helpers import create, log_text, wait_for_build


def _feed(masker: Masker, data: bytes) -> str:
    assembler = LineAssembler(masker, 64 * 1024)
    return assembler.feed(data) + assembler.close()


def test_secret_with_surrounding_whitespace_is_masked_when_word_split() -> None:
    masker = Masker(["  s3cr3t-core  "])
    assert _feed(masker, b"value: s3cr3t-core\n") == "value: ***\n"
    assert _feed(masker, b"quoted: [  s3cr3t-core  ]\n") == "quoted: [***]\n"


def test_whitespace_padded_short_core_is_not_masked() -> None:
    masker = Masker(["   ab   "])  # masking "ab" would wreck every log and hide nothing
    assert _feed(masker, b"table ab cd\n") == "table ab cd\n"


async def test_padded_secret_variable_is_masked_in_the_build_log(
    client: httpx.AsyncClient,
) -> None:
    body = await create(
        client,
        'jobs:\n  a:\n    steps:\n      - run: echo [$API_TOKEN] "[$API_TOKEN]"\n',
        variables={"API_TOKEN": "  padded-s3cr3t  "},
    )
    await wait_for_build(client, body["id"])
    text = await log_text(client, body["id"])
    assert "padded-s3cr3t" not in text
    assert "[***]" in text
