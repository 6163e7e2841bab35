"""The local runner's per-step runtime files ($GITHUB_OUTPUT, _ENV, _PATH, _STATE, _STEP_SUMMARY)
and script: one set of paths per job, emptied before each step (app/workflow/runtime.py
`reuse_files`), and never written or read through whatever a step leaves at those paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.runners.step_files import look, prepare_files, present, read_runtime_files, small
from tests.helpers import job, log_text
from tests.helpers import run_workflow as run


async def test_each_step_starts_with_empty_files_and_keeps_its_own_outputs(
    client: httpx.AsyncClient,
) -> None:
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - id: one
                run: |
                  echo "x=1" >> "$GITHUB_OUTPUT"
                  echo "FROM_ONE=yes" >> "$GITHUB_ENV"
                  echo "# one" >> "$GITHUB_STEP_SUMMARY"
              - id: two
                run: |
                  for f in "$GITHUB_OUTPUT" "$GITHUB_ENV" "$GITHUB_STEP_SUMMARY" "$GITHUB_PATH"; do
                    test -f "$f" && test ! -s "$f" || { echo "not empty: $f"; exit 1; }
                  done
                  echo "y=2" >> "$GITHUB_OUTPUT"
                  echo "env=$FROM_ONE x=${{ steps.one.outputs.x }}"
        """,
    )
    assert done["status"] == "success", done
    steps = job(done, "build")["steps"]
    assert [s["outputs"] for s in steps] == [{"x": "1"}, {"y": "2"}]
    assert steps[0]["summary"] == "# one\n"
    assert not steps[1]["summary"]
    assert "env=yes x=1" in await log_text(client, done["id"])


async def test_a_symlink_left_at_a_runtime_path_is_neither_read_nor_written_through(
    client: httpx.AsyncClient,
) -> None:
    # The service must not read a file for the step (its summary pointing at a file the step
    # names) nor truncate one (the next step's $GITHUB_OUTPUT pointing at it).
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: |
                  echo "LEAKED-$((6 * 7))" > "$RUNNER_TEMP/../secret"
                  ln -sf "$RUNNER_TEMP/../secret" "$GITHUB_STEP_SUMMARY"
                  echo keep > "$RUNNER_TEMP/../victim"
                  ln -sf "$RUNNER_TEMP/../victim" "$GITHUB_OUTPUT"
                  ln -sf "$RUNNER_TEMP/../victim" "$0"
              - run: |
                  test ! -L "$GITHUB_OUTPUT" && test -f "$GITHUB_OUTPUT"
                  echo "victim=$(cat "$RUNNER_TEMP/../victim")"
        """,
    )
    assert done["status"] == "success", done
    steps = job(done, "build")["steps"]
    assert not steps[0]["summary"]
    text = await log_text(client, done["id"])
    assert "LEAKED-42" not in text
    assert "victim=keep" in text


async def test_a_fifo_left_at_a_runtime_path_does_not_hang_the_job(
    client: httpx.AsyncClient,
) -> None:
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: |
                  rm "$GITHUB_OUTPUT" && mkfifo "$GITHUB_OUTPUT"
                  rm "$GITHUB_ENV" && mkfifo "$GITHUB_ENV"
              - run: test -f "$GITHUB_OUTPUT" && test -f "$GITHUB_ENV" && echo regular-again
        """,
    )
    assert done["status"] == "success", done
    assert "regular-again" in await log_text(client, done["id"])


async def test_a_temp_dir_replaced_by_a_symlink_is_not_followed(
    client: httpx.AsyncClient,
) -> None:
    # The link could name another build's temp dir: the service would empty and read its files.
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: |
                  mkdir "$RUNNER_TEMP/../elsewhere"
                  echo keep > "$RUNNER_TEMP/../elsewhere/github_output"
                  mv "$RUNNER_TEMP" "$RUNNER_TEMP.moved"
                  ln -s elsewhere "$RUNNER_TEMP"
              - run: echo second-step-ran
        """,
    )
    steps = job(done, "build")["steps"]
    assert [s["status"] for s in steps] == ["success", "error"], done
    assert "second-step-ran" not in await log_text(client, done["id"])


def test_empty_files_are_left_as_they_are_and_read_without_opening(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most steps write none of their runtime files: an empty regular file is neither opened
    to be emptied nor opened to be read; one with content, or a symlink, is handled as ever."""
    for name in ("out", "env", "full"):
        (tmp_path / name).write_text("")
    (tmp_path / "full").write_text("x=1\n")
    (tmp_path / "target").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    opened: list[str] = []
    real_open = os.open

    def counted(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real_open(path, flags, *args, **kwargs)

    folder = real_open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        monkeypatch.setattr(os, "open", counted)
        prepare_files(folder, ["out", "env", "full", "link", "new"], "step.sh", "true")
        assert sorted(opened) == ["full", "link", "link", "new", "step.sh"], opened
        assert (tmp_path / "target").read_text() == "keep"
        assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").read_text() == ""
        assert (tmp_path / "full").read_text() == "" and (tmp_path / "new").is_file()
        (tmp_path / "full").write_text("x=2\n")
        opened.clear()
        files = read_runtime_files(folder, {"GITHUB_OUTPUT": "full", "GITHUB_ENV": "env"})
        assert (files.output, files.env) == ("x=2\n", "")
        assert opened == ["full"], opened
        # With what `look` saw just before, neither looks at the files again (one lstat pass
        # before a step and one after it, not one per check).
        names = {"GITHUB_OUTPUT": "full", "GITHUB_ENV": "env"}
        found = look(folder, names.values())
        assert small(found) and present(found) and not present(look(folder, ["gone"]))
        looked: list[str] = []
        real_lstat = os.lstat

        def counted_lstat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
            looked.append(str(path))
            return real_lstat(path, *args, **kwargs)

        monkeypatch.setattr(os, "lstat", counted_lstat)
        opened.clear()
        again = read_runtime_files(folder, names, found)
        prepare_files(folder, names.values(), "", "", found)
        assert (again.output, again.env) == ("x=2\n", "")
        assert looked == [], looked
        assert opened == ["full", "full"], opened  # read it, then emptied it
        assert (tmp_path / "full").read_text() == ""
    finally:
        os.close(folder)
