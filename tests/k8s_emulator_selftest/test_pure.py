"""Selector parsing and `$(VAR)` expansion, against the behaviour of the real implementations."""

from __future__ import annotations

import pytest

from tests.k8s_emulator.errors import ApiError
from tests.k8s_emulator.expansion import expand, mapping_for
from tests.k8s_emulator.selectors import (
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)


def labelled(**labels: str) -> dict[str, object]:
    return {"metadata": {"name": "x", "namespace": "ci", "labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a in (x, y)", {"a": "y"}, True),
        ("a in (x,y),b=c", {"a": "x"}, False),
        ("a notin (x)", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": "1"}, False),
        ("ci-executor/build=12,job-name", {"ci-executor/build": "12", "job-name": "j"}, True),
        ("", {}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), labelled(**labels)) is expected


def test_bad_label_selector_is_400() -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector("a=b c")
    assert caught.value.code == 400


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ci"}, "status": {"phase": "Running"}}
    assert fields_match(parse_field_selector("pods", "metadata.name=p,status.phase!=Failed"), pod)
    assert not fields_match(parse_field_selector("pods", "status.phase=Pending"), pod)
    with pytest.raises(ApiError, match=r"field label not supported: spec\.foo"):
        parse_field_selector("jobs", "spec.foo=1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("$(A)$(B)", "12"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("echo $$", "echo $"),
        ("$(MISSING)", "$(MISSING)"),
        ("$(date +%s)", "$(date +%s)"),
        ("$(A", "$(A"),
        ("$HOME", "$HOME"),
        ("trailing $", "trailing $"),
    ],
)
def test_expansion_matches_kubernetes(text: str, expected: str) -> None:
    assert expand(text, mapping_for({"A": "1", "B": "2"})) == expected
