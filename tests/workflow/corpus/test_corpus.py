"""Every corpus workflow parses as its manifest entry says (tests/workflow/corpus/manifest.yaml).

`parse: ok` must parse; `parse: uses-refused` must be refused with problems that are all about
`uses:` actions we do not run. An entry with `missing:` names a feature the parser still lacks:
it is an xfail, strict, so the marker has to go as soon as the feature lands.
"""

from __future__ import annotations

import pytest

from app.workflow import WorkflowError, parse_workflow
from tests.workflow.corpus.manifest import Entry, load, workflow_files

ENTRIES = load()


def _param(entry: Entry) -> object:
    marks = []
    if entry.missing:
        # A parser crash is not "missing": only a refusal (or, for uses-refused files, a refusal
        # that names more than `uses:`) may be expected.
        marks.append(
            pytest.mark.xfail(
                reason=entry.missing, strict=True, raises=(WorkflowError, AssertionError)
            )
        )
    return pytest.param(entry, id=entry.file, marks=marks)


def test_manifest_lists_every_file_once() -> None:
    listed = [entry.file for entry in ENTRIES]
    assert len(listed) == len(set(listed))
    assert set(listed) == workflow_files()


def test_corpus_is_large_enough() -> None:
    assert sum(e.file.startswith("act/") for e in ENTRIES) >= 45
    assert sum(e.file.startswith("docs/") for e in ENTRIES) >= 25


@pytest.mark.parametrize("entry", [_param(e) for e in ENTRIES])
def test_parses_as_expected(entry: Entry) -> None:
    if entry.parse == "ok":
        spec = parse_workflow(entry.text())
        assert spec.jobs
        return
    with pytest.raises(WorkflowError) as info:
        parse_workflow(entry.text())
    messages = [p.message for p in info.value.problems]
    assert messages
    assert all("uses" in m for m in messages), messages
