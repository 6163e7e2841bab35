"""parse_workflow: the valid shape, every problem with its position, cycles and ordering."""

from __future__ import annotations

import json
from textwrap import dedent

import pytest

from app.workflow import (
    Condition,
    JobSpec,
    Problem,
    StepSpec,
    WorkflowError,
    parse_condition,
    parse_workflow,
)
from app.workflow.checks import JOB_KEYS, STEP_KEYS, WORKFLOW_KEYS

Found = list[tuple[int, int, str]]


def problems(text: str) -> Found:
    with pytest.raises(WorkflowError) as info:
        parse_workflow(text)
    return [(p.line, p.column, p.message) for p in info.value.problems]


def order(text: str) -> list[str]:
    return [job.name for job in parse_workflow(dedent(text)).jobs]


# --- the valid shape ---------------------------------------------------------------------------


DESIGN_EXAMPLE = """\
name: ci                       # optional
env: {GREETING: hello}         # workflow env
jobs:
  build:                       # job id: [A-Za-z_][A-Za-z0-9_-]*
    name: Build                # optional display name
    image: python:3.12-slim    # container image (kubernetes runner); local runner ignores it
    env: {A: "1"}
    timeout-minutes: 10        # number > 0, fractions allowed
    steps:
      - name: install          # default: first line of `run`
        run: pip install -r requirements.txt
      - run: pytest -q
        env: {B: "2"}
        timeout-minutes: 5
        continue-on-error: false
        working-directory: src
        shell: bash            # bash (default, `bash -eo pipefail`) or sh
        if: success()          # success() (default) | always() | failure() | cancelled()
  test:
    needs: [build]             # string or list; defines the DAG edges
    if: success()
    strategy:
      matrix: {py: ["3.11", "3.12"]}   # expands to jobs "test (3.11)", "test (3.12)"
    steps:
      - run: echo "${{ matrix.py }}"
"""


def test_design_example() -> None:
    spec = parse_workflow(DESIGN_EXAMPLE)
    assert spec.name == "ci"
    assert spec.env == {"GREETING": "hello"}
    assert spec.jobs[0] == JobSpec(
        name="build",
        key="build",
        display_name="Build",
        index=0,
        needs=(),
        steps=(
            StepSpec(index=0, name="install", run="pip install -r requirements.txt"),
            StepSpec(
                index=1,
                name="Run pytest -q",
                run="pytest -q",
                env={"B": "2"},
                condition=parse_condition("success()"),
                continue_on_error=False,
                timeout_minutes=5.0,
                working_directory="src",
                shell="bash",
            ),
        ),
        image="python:3.12-slim",
        env={"A": "1"},
        timeout_minutes=10.0,
    )
    assert [(j.name, j.key, j.display_name, j.index, j.needs, j.matrix) for j in spec.jobs[1:]] == [
        ("test (3.11)", "test", "test (3.11)", 1, ("build",), {"py": "3.11"}),
        ("test (3.12)", "test", "test (3.12)", 2, ("build",), {"py": "3.12"}),
    ]
    assert spec.job("test (3.12)").steps[0].run == 'echo "3.12"'
    assert spec.edges == [("build", "test (3.11)"), ("build", "test (3.12)")]


def test_defaults() -> None:
    spec = parse_workflow("jobs:\n  only:\n    steps:\n      - run: make\n")
    assert spec.name is None
    assert spec.env == {}
    [job] = spec.jobs
    assert job == JobSpec(
        name="only",
        key="only",
        display_name="only",
        index=0,
        needs=(),
        steps=(StepSpec(index=0, name="Run make", run="make"),),
    )
    assert job.condition == Condition.default()
    assert (job.image, job.timeout_minutes, job.matrix, job.fail_fast, job.max_parallel) == (
        None,
        None,
        None,
        True,
        None,
    )
    step = job.steps[0]
    assert (step.shell, step.continue_on_error, step.timeout_minutes, step.working_directory) == (
        None,
        False,
        None,
        None,
    )


def test_step_fields() -> None:
    spec = parse_workflow(
        dedent(
            """\
            jobs:
              j:
                if: ${{ always() }}
                timeout-minutes: 0.02
                steps:
                  - run: exit 1
                    shell: sh
                    continue-on-error: true
                    timeout-minutes: 1.5
                    working-directory: sub/dir
                    if: failure() || cancelled()
            """
        )
    )
    job = spec.jobs[0]
    assert job.timeout_minutes == 0.02
    assert job.condition.source == "${{ always() }}"
    step = job.steps[0]
    assert (step.shell, step.continue_on_error, step.timeout_minutes) == ("sh", True, 1.5)
    assert step.working_directory == "sub/dir"
    assert step.condition.source == "failure() || cancelled()"
    assert step.condition.evaluate(success=False, failure=False, cancelled=True)


@pytest.mark.parametrize(
    ("run", "name"),
    [
        # GitHub's default: "Run " and the script's first non-blank line
        ("echo hi", "Run echo hi"),
        ("  echo hi  ", "Run echo hi"),
        ("\n  \n\n    first line  \n  second\n", "Run first line"),
        ("set -e\nmake\n", "Run set -e"),
        ("x" * 150, "Run " + "x" * 96),
        ("y" * 95 + " " + "z" * 10, "Run " + "y" * 95 + " "),
    ],
)
def test_step_default_name(run: str, name: str) -> None:
    # JSON strings are YAML flow scalars, so the run text arrives exactly as given here
    text = "jobs:\n  j:\n    steps:\n      - run: " + json.dumps(run) + "\n"
    step = parse_workflow(text).jobs[0].steps[0]
    assert step.run == run
    assert step.name == name


def test_block_scalar_run() -> None:
    text = "jobs:\n  j:\n    steps:\n      - run: |\n\n          make\n          make test\n"
    step = parse_workflow(text).jobs[0].steps[0]
    assert (step.run, step.name) == ("\nmake\nmake test\n", "Run make")


def test_step_indexes_are_zero_based() -> None:
    spec = parse_workflow("jobs:\n  j:\n    steps: [{run: a}, {run: b}, {run: c}]\n")
    assert [(s.index, s.run) for s in spec.jobs[0].steps] == [(0, "a"), (1, "b"), (2, "c")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello", "hello"),
        ("'01'", "01"),
        ("1", "1"),
        ("-7", "-7"),
        ("0x10", "16"),
        ("1.5", "1.5"),
        ("3.10", "3.1"),  # a YAML float, as on GitHub: quote it to keep "3.10"
        ("3.0", "3"),
        ("1e3", "1000"),
        ("true", "true"),
        ("false", "false"),
        ("null", ""),
        ("~", ""),
        ("", ""),
        ("yes", "yes"),  # YAML 1.2: a string, not a boolean
        ("2026-01-31", "2026-01-31"),
    ],
)
def test_env_values_become_strings(value: str, expected: str) -> None:
    text = f"env:\n  V: {value}\njobs:\n  j:\n    env:\n      V: {value}\n    steps:\n"
    text += f"      - run: x\n        env:\n          V: {value}\n"
    spec = parse_workflow(text)
    assert spec.env == {"V": expected}
    assert spec.jobs[0].env == {"V": expected}
    assert spec.jobs[0].steps[0].env == {"V": expected}


@pytest.mark.parametrize(
    "on",
    [
        "on: push",
        "on: [push, pull_request]",
        "on:\n  push:\n    branches: [main]\n  workflow_dispatch:",
        "on:",
    ],
)
def test_top_level_on_is_accepted_and_ignored(on: str) -> None:
    spec = parse_workflow(f"{on}\njobs:\n  j:\n    steps: [{{run: x}}]\n")
    assert [job.name for job in spec.jobs] == ["j"]


def test_brackets_up_to_the_depth_limit_are_fine() -> None:
    nested = "[" * 100 + "]" * 100
    # stray closers in a script must not let later openers go uncounted, nor fail on their own
    text = f"on: {nested}\njobs:\n  j:\n    steps: [{{run: 'echo ]]]] {{x}} [[ -f a ]]'}}]\n"
    assert parse_workflow(text).jobs[0].steps[0].run == "echo ]]]] {x} [[ -f a ]]"


def test_needs_as_string_or_list_and_repeats_collapse() -> None:
    spec = parse_workflow(
        dedent(
            """\
            jobs:
              a: {steps: [{run: x}]}
              b: {needs: a, steps: [{run: x}]}
              c: {needs: [a, b, a], steps: [{run: x}]}
              d: {needs: [], steps: [{run: x}]}
            """
        )
    )
    assert [(j.name, j.needs) for j in spec.jobs] == [
        ("a", ()),
        ("b", ("a",)),
        ("c", ("a", "b")),
        ("d", ()),
    ]


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        # independent jobs keep YAML order
        ({"a": [], "b": [], "c": []}, ["a", "b", "c"]),
        # a job moves after what it needs, and no further
        ({"a": ["b"], "b": [], "c": []}, ["b", "a", "c"]),
        # among the jobs that are ready, the earliest in YAML goes first
        ({"z": ["y"], "y": [], "x": []}, ["y", "z", "x"]),
        ({"c": ["a"], "b": [], "a": []}, ["b", "a", "c"]),
        (
            {"deploy": ["test", "lint"], "test": ["build"], "lint": [], "build": []},
            ["lint", "build", "test", "deploy"],
        ),
        # diamond
        ({"d": ["b", "c"], "c": ["a"], "b": ["a"], "a": []}, ["a", "c", "b", "d"]),
        # chain written backwards
        ({"e": ["d"], "d": ["c"], "c": ["b"], "b": ["a"], "a": []}, ["a", "b", "c", "d", "e"]),
    ],
)
def test_topological_order(jobs: dict[str, list[str]], expected: list[str]) -> None:
    text = "jobs:\n" + "".join(
        f"  {name}:\n    needs: [{', '.join(needs)}]\n    steps: [{{run: x}}]\n"
        for name, needs in jobs.items()
    )
    spec = parse_workflow(text)
    assert [job.name for job in spec.jobs] == expected
    assert [job.index for job in spec.jobs] == list(range(len(expected)))
    position = {job.name: job.index for job in spec.jobs}
    for before, after in spec.edges:
        assert position[before] < position[after]


# --- problems, one at a time -------------------------------------------------------------------

ALLOWED_TOP = "allowed keys: " + ", ".join(WORKFLOW_KEYS)
ALLOWED_JOB = "allowed keys: " + ", ".join(JOB_KEYS)
ALLOWED_STEP = "allowed keys: " + ", ".join(STEP_KEYS)
BAD_ID = "it must start with a letter or '_' and contain only letters, digits, '_' and '-'"
BAD_ENV_NAME = "(it must be a non-empty string without '=')"
USES = (
    "step 1 of job 'a' uses 'docker://alpine:3.20': Docker actions (`docker://`) are not "
    "supported yet (supported: actions/checkout@<ref> (built in), local actions `./path`, and "
    "composite or JavaScript actions `owner/repo[/path]@ref` from ACTIONS_URL)"
)
USES_WORKFLOW = (
    "step 1 of job 'a' uses 'o/r/.github/workflows/ci.yml@v1': 'o/r/.github/workflows/ci.yml@v1': "
    "reusable workflows are not supported yet (supported: actions/checkout@<ref> (built in), "
    "local actions `./path`, and composite or JavaScript actions `owner/repo[/path]@ref` from "
    "ACTIONS_URL)"
)
GOOD_JOB = "  ok:\n    steps: [{run: x}]\n"

PROBLEM_CASES: list[tuple[str, str, Found]] = [
    # --- the document
    ("empty", "", [(1, 1, "the workflow is empty")]),
    ("only-comments", "# nothing\n\n", [(1, 1, "the workflow is empty")]),
    ("only-marker", "---\n", [(1, 1, "the workflow is empty")]),
    ("top-list", "- a\n- b\n", [(1, 1, "the workflow must be a mapping with a `jobs` key")]),
    (
        "top-scalar-after-comment",
        "# c\nhello\n",
        [(2, 1, "the workflow must be a mapping with a `jobs` key")],
    ),
    (
        "syntax-unclosed-flow",
        "jobs: [\n",
        [
            (
                2,
                1,
                "invalid YAML: while parsing a flow node, expected the node content, "
                "but found '<stream end>'",
            )
        ],
    ),
    (
        "syntax-bad-indent",
        "jobs:\n  a:\n    steps: []\n   b: 1\n",
        [
            (
                4,
                4,
                "invalid YAML: while parsing a block mapping, expected <block end>, "
                "but found '<block mapping start>'",
            )
        ],
    ),
    (
        "syntax-tab",
        "jobs:\n\ta: 1\n",
        [
            (
                2,
                1,
                "invalid YAML: while scanning for the next token, "
                "found character '\\t' that cannot start any token",
            )
        ],
    ),
    (
        "two-documents",
        "jobs: {}\n---\njobs: {}\n",
        [
            (
                2,
                1,
                "invalid YAML: expected a single document in the stream, "
                "but found another document",
            )
        ],
    ),
    (
        "bad-explicit-tag",
        "jobs: !!int abc\n",
        [
            (
                0,
                0,
                "invalid YAML: cannot construct a value "
                "(ValueError(\"invalid literal for int() with base 10: 'abc'\"))",
            )
        ],
    ),
    (
        "nested-too-deeply",
        # block style: ruamel's scanner is quadratic in flow (`[[[`) nesting, which would be slow
        "jobs:\n  " + "- " * 3000 + "x\n",
        [(0, 0, "invalid YAML: the document is nested too deeply")],
    ),
    (
        "brackets-too-deep",
        "jobs:\n  a: " + "[" * 100 + "{" + "}" + "]" * 100 + "\n",
        [(2, 106, "invalid YAML: brackets nest more than 100 deep")],
    ),
    # --- top level
    ("no-jobs", "name: ci\n", [(1, 1, "the workflow has no `jobs` key")]),
    ("no-jobs-after-comment", "# c\nname: ci\n", [(2, 1, "the workflow has no `jobs` key")]),
    (
        "jobs-null",
        "jobs:\n",
        [(1, 1, "`jobs` must be a non-empty mapping of job ids to jobs, not nothing")],
    ),
    (
        "jobs-empty",
        "jobs: {}\n",
        [(1, 7, "`jobs` must be a non-empty mapping of job ids to jobs, not an empty mapping")],
    ),
    (
        "jobs-list",
        "jobs:\n  - a\n",
        [(2, 3, "`jobs` must be a non-empty mapping of job ids to jobs, not a list")],
    ),
    (
        "unknown-top-key",
        "jobs:\n" + GOOD_JOB + "permision: read-all\n",
        [
            (
                4,
                1,
                "unknown key 'permision' in the workflow (did you mean 'permissions'?); "
                + ALLOWED_TOP,
            )
        ],
    ),
    (
        "name-not-string",
        "name: [a]\njobs:\n" + GOOD_JOB,
        [(1, 7, "`name` of the workflow must be a non-empty string, not a list")],
    ),
    (
        "name-empty",
        "name: ''\njobs:\n" + GOOD_JOB,
        [(1, 7, "`name` of the workflow must be a non-empty string, not ''")],
    ),
    (
        "workflow-env-list",
        "env: [A]\njobs:\n" + GOOD_JOB,
        [(1, 6, "`env` of the workflow must be a mapping of names to values, not a list")],
    ),
    (
        "workflow-env-value-mapping",
        "env:\n  A: {x: 1}\njobs:\n" + GOOD_JOB,
        [
            (
                2,
                6,
                "environment variable 'A' of the workflow must be a string, number, boolean or "
                "null, not a mapping (quote it to keep it as text)",
            )
        ],
    ),
    (
        "workflow-env-datetime",
        "env:\n  A: 2026-01-31T10:00:00Z\njobs:\n" + GOOD_JOB,
        [
            (
                2,
                6,
                "environment variable 'A' of the workflow must be a string, number, boolean or "
                "null, not a TimeStamp (quote it to keep it as text)",
            )
        ],
    ),
    (
        "workflow-env-bad-names",
        "env:\n  1: a\n  A=B: b\n  '': c\njobs:\n" + GOOD_JOB,
        [
            (
                2,
                3,
                f"environment variable name 1 in the workflow is not valid {BAD_ENV_NAME}",
            ),
            (
                3,
                3,
                f"environment variable name 'A=B' in the workflow is not valid {BAD_ENV_NAME}",
            ),
            (
                4,
                3,
                f"environment variable name '' in the workflow is not valid {BAD_ENV_NAME}",
            ),
        ],
    ),
    # --- job ids and bodies
    (
        "job-id-digit",
        "jobs:\n  1st:\n    steps: [{run: x}]\n",
        [(2, 3, f"job id '1st' is not valid: {BAD_ID}")],
    ),
    (
        "job-id-space-and-dot",
        "jobs:\n  'a b':\n    steps: [{run: x}]\n  a.b:\n    steps: [{run: x}]\n",
        [
            (2, 3, f"job id 'a b' is not valid: {BAD_ID}"),
            (4, 3, f"job id 'a.b' is not valid: {BAD_ID}"),
        ],
    ),
    (
        "job-id-number",
        "jobs:\n  12:\n    steps: [{run: x}]\n",
        [(2, 3, f"job id 12 is not valid: {BAD_ID}")],
    ),
    (
        "job-null",
        "jobs:\n  a:\n",
        [(2, 3, "job 'a' must be a mapping with `steps`, not nothing")],
    ),
    (
        "job-list",
        "jobs:\n  a: [run: x]\n",
        [(2, 6, "job 'a' must be a mapping with `steps`, not a list")],
    ),
    (
        "job-unknown-key",
        "jobs:\n  a:\n    steps: [{run: x}]\n    service: {}\n",
        [(4, 5, f"unknown key 'service' in job 'a' (did you mean 'services'?); {ALLOWED_JOB}")],
    ),
    (
        # issue 11: `runs-on` is accepted now; a reusable workflow is refused clearly
        "job-uses-reusable-workflow",
        "jobs:\n  a:\n    runs-on: ubuntu-latest\n    uses: o/r/.github/workflows/x.yml@v1\n",
        [
            (
                4,
                5,
                "job 'a': reusable workflows (`uses:` on a job) are not supported yet; "
                "copy the called workflow's jobs into this one",
            )
        ],
    ),
    (
        "job-name-number",
        "jobs:\n  a:\n    name: 5\n    steps: [{run: x}]\n",
        [(3, 11, "`name` of job 'a' must be a non-empty string, not 5")],
    ),
    (
        "job-image-empty",
        "jobs:\n  a:\n    image: ''\n    steps: [{run: x}]\n",
        [(3, 12, "`image` of job 'a' must be a non-empty string, not ''")],
    ),
    (
        "job-env-scalar",
        "jobs:\n  a:\n    env: A=1\n    steps: [{run: x}]\n",
        [(3, 10, "`env` of job 'a' must be a mapping of names to values, not 'A=1'")],
    ),
    *[
        (
            f"job-timeout-{shown}",
            f"jobs:\n  a:\n    timeout-minutes: {value}\n    steps: [{{run: x}}]\n",
            [
                (
                    3,
                    column,
                    f"`timeout-minutes` of job 'a' must be a number greater than 0, not {shown}",
                )
            ],
        )
        for value, shown, column in [
            ("0", "0", 22),
            ("-1", "-1", 22),
            ("0.0", "0", 22),
            ("'10'", "'10'", 22),
            ("true", "true", 22),
            (".inf", "inf", 22),
            (".nan", "nan", 22),
            ("[1]", "a list", 22),
            ("", "nothing", 5),
        ]
    ],
    (
        "job-if-bool",
        "jobs:\n  a:\n    if: true\n    steps: [{run: x}]\n",
        [(3, 9, "`if` of job 'a' must be an expression string such as 'success()', not true")],
    ),
    (
        # issue 11: any GitHub expression; a syntax error points inside the scalar
        "job-if-syntax",
        "jobs:\n  a:\n    if: github.ref == \n    steps: [{run: x}]\n",
        [(3, 20, "`if` of job 'a': Unexpected end of expression after '=='")],
    ),
    # --- needs
    (
        "needs-number",
        "jobs:\n" + GOOD_JOB + "  a:\n    needs: 3\n    steps: [{run: x}]\n",
        [(5, 12, "`needs` of job 'a' must be a job id or a list of job ids, not 3")],
    ),
    (
        "needs-mapping",
        "jobs:\n" + GOOD_JOB + "  a:\n    needs: {ok: 1}\n    steps: [{run: x}]\n",
        [(5, 12, "`needs` of job 'a' must be a job id or a list of job ids, not a mapping")],
    ),
    (
        "needs-list-item-not-string",
        "jobs:\n" + GOOD_JOB + "  a:\n    needs: [ok, [x], 4]\n    steps: [{run: x}]\n",
        [
            (
                5,
                17,
                "`needs` of job 'a' must be a job id or a list of job ids, not a list in the list",
            ),
            (5, 22, "`needs` of job 'a' must be a job id or a list of job ids, not 4 in the list"),
        ],
    ),
    (
        "needs-missing-string",
        "jobs:\n  test:\n    needs: nope\n    steps: [{run: x}]\n",
        [(3, 12, "job 'test' needs 'nope', which does not exist")],
    ),
    (
        "needs-missing-in-list",
        "jobs:\n"
        + GOOD_JOB
        + "  test:\n    needs:\n      - ok\n      - nope\n    steps: [{run: x}]\n",
        [(7, 9, "job 'test' needs 'nope', which does not exist")],
    ),
    (
        "needs-itself",
        "jobs:\n  a:\n    needs: [a]\n    steps: [{run: x}]\n",
        [(3, 13, "job 'a' needs itself")],
    ),
    # --- steps
    ("steps-missing", "jobs:\n  a:\n    name: A\n", [(2, 3, "job 'a' has no `steps`")]),
    (
        "steps-null",
        "jobs:\n  a:\n    steps:\n",
        [(3, 5, "`steps` of job 'a' must be a non-empty list of steps, not nothing")],
    ),
    (
        "steps-empty",
        "jobs:\n  a:\n    steps: []\n",
        [(3, 12, "`steps` of job 'a' must be a non-empty list of steps, not an empty list")],
    ),
    (
        "steps-mapping",
        "jobs:\n  a:\n    steps:\n      run: x\n",
        [(4, 7, "`steps` of job 'a' must be a non-empty list of steps, not a mapping")],
    ),
    (
        "step-scalar",
        "jobs:\n  a:\n    steps:\n      - run: x\n      - echo hi\n",
        [(5, 9, "step 2 of job 'a' must be a mapping with `run`, not 'echo hi'")],
    ),
    (
        "step-without-run",
        "jobs:\n  a:\n    steps:\n      - name: build\n        shell: sh\n",
        [(4, 9, "step 1 of job 'a' has neither `run` nor `uses`")],
    ),
    (
        "step-run-null",
        "jobs:\n  a:\n    steps:\n      - run:\n",
        [(4, 9, "`run` of step 1 of job 'a' must be a non-empty string, not nothing")],
    ),
    (
        "step-run-list",
        "jobs:\n  a:\n    steps:\n      - run: [make, test]\n",
        [(4, 14, "`run` of step 1 of job 'a' must be a non-empty string, not a list")],
    ),
    (
        "step-uses",
        "jobs:\n  a:\n    steps:\n      - uses: docker://alpine:3.20\n        with: {d: 1}\n",
        [(4, 15, USES)],
    ),
    (
        "step-uses-reusable-workflow",
        "jobs:\n  a:\n    steps:\n      - uses: o/r/.github/workflows/ci.yml@v1\n",
        [(4, 15, USES_WORKFLOW)],
    ),
    (
        "step-uses-no-ref",
        "jobs:\n  a:\n    steps:\n      - uses: actions/setup-python\n",
        [
            (
                4,
                15,
                "step 1 of job 'a' uses 'actions/setup-python': 'actions/setup-python': expected "
                "owner/repo@ref or owner/repo/path@ref (supported: actions/checkout@<ref> (built "
                "in), local actions `./path`, and composite or JavaScript actions "
                "`owner/repo[/path]@ref` from ACTIONS_URL)",
            )
        ],
    ),
    (
        "step-uses-and-run",
        "jobs:\n  a:\n    steps:\n      - run: make\n        uses: x\n",
        [(5, 9, "step 1 of job 'a' has both `run` and `uses`; use one")],
    ),
    (
        "step-unknown-key",
        "jobs:\n  a:\n    steps:\n      - run: make\n        ids: build\n",
        [(5, 9, f"unknown key 'ids' in step 1 of job 'a' (did you mean 'id'?); {ALLOWED_STEP}")],
    ),
    (
        "step-name-empty",
        "jobs:\n  a:\n    steps:\n      - run: make\n        name: ''\n",
        [(5, 15, "`name` of step 1 of job 'a' must be a non-empty string, not ''")],
    ),
    (
        "step-env-value-list",
        "jobs:\n  a:\n    steps:\n      - run: make\n        env: {A: [1]}\n",
        [
            (
                5,
                18,
                "environment variable 'A' of step 1 of job 'a' must be a string, number, boolean "
                "or null, not a list (quote it to keep it as text)",
            )
        ],
    ),
    (
        "step-continue-on-error-string",
        "jobs:\n  a:\n    steps:\n      - run: make\n        continue-on-error: 'true'\n",
        [(5, 28, "`continue-on-error` of step 1 of job 'a' must be true or false, not 'true'")],
    ),
    (
        "step-continue-on-error-yes",
        "jobs:\n  a:\n    steps:\n      - run: make\n        continue-on-error: yes\n",
        [(5, 28, "`continue-on-error` of step 1 of job 'a' must be true or false, not 'yes'")],
    ),
    (
        "step-shell",
        "jobs:\n  a:\n    steps:\n      - run: make\n        shell: zsh\n",
        [
            (
                5,
                16,
                "`shell` of step 1 of job 'a' must be one of bash, sh, python, pwsh, powershell "
                "or a command template containing {0} (e.g. 'perl {0}'), not 'zsh'",
            )
        ],
    ),
    (
        "step-working-directory",
        "jobs:\n  a:\n    steps:\n      - run: make\n        working-directory: 7\n",
        [(5, 28, "`working-directory` of step 1 of job 'a' must be a non-empty string, not 7")],
    ),
    (
        "step-timeout",
        "jobs:\n  a:\n    steps:\n      - run: make\n        timeout-minutes: -5\n",
        [(5, 26, "`timeout-minutes` of step 1 of job 'a' must be a number greater than 0, not -5")],
    ),
    (
        "step-if",
        "jobs:\n  a:\n    steps:\n      - run: make\n        if: ${{ success() && env.X == }}\n",
        [(5, 36, "`if` of step 1 of job 'a': Unexpected end of expression after '=='")],
    ),
    (
        "run-block-scalar-expression",
        "jobs:\n  a:\n    steps:\n      - run: |\n          echo hi\n          echo ${{ foo( }}\n",
        [(6, 23, "`run` of step 1 of job 'a': Unexpected end of expression after '('")],
    ),
    # --- duplicate keys
    (
        "duplicate-top-key",
        "name: a\njobs:\n" + GOOD_JOB + "name: b\n",
        [(5, 1, "duplicate key 'name'")],
    ),
    (
        "duplicate-job-id",
        "jobs:\n  a:\n    steps: [{run: x}]\n  a:\n    steps: [{run: y}]\n",
        [(4, 3, "duplicate key 'a'")],
    ),
    (
        "duplicate-step-keys",
        "jobs:\n  a:\n    steps:\n      - run: x\n        run: y\n        env: {A: 1, A: 2}\n",
        [(5, 9, "duplicate key 'run'"), (6, 21, "duplicate key 'A'")],
    ),
    (
        "duplicate-key-in-anchored-mapping-reported-once",
        "env: &e {A: 1, A: 2}\njobs:\n  a:\n    env: *e\n    steps: [{run: x}]\n",
        [(1, 16, "duplicate key 'A'")],
    ),
    (
        "duplicate-merge-key",
        "x: &x {a: 1}\njobs:\n  a:\n    <<: *x\n    <<: *x\n    steps: [{run: x}]\n",
        [(5, 5, 'invalid YAML: while constructing a mapping, found duplicate merge key "<<"')],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [pytest.param(t, e, id=i) for i, t, e in PROBLEM_CASES]
)
def test_problem(text: str, expected: Found) -> None:
    assert problems(text) == expected


# --- cycles ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """\
            jobs:
              a: {needs: b, steps: [{run: x}]}
              b: {needs: a, steps: [{run: x}]}
            """,
            [(2, 14, "cycle in needs: a -> b -> a")],
        ),
        (
            """\
            jobs:
              a: {needs: [b], steps: [{run: x}]}
              b: {needs: [c], steps: [{run: x}]}
              c: {needs: [a], steps: [{run: x}]}
            """,
            [(2, 15, "cycle in needs: a -> b -> c -> a")],
        ),
        # named from the cycle's first job in YAML order; upstream and downstream jobs are not in it
        (
            """\
            jobs:
              up: {steps: [{run: x}]}
              down: {needs: [c], steps: [{run: x}]}
              c: {needs: [up, d], steps: [{run: x}]}
              d: {needs: [c], steps: [{run: x}]}
            """,
            [(4, 19, "cycle in needs: c -> d -> c")],
        ),
        # two separate cycles are two problems
        (
            """\
            jobs:
              a: {needs: [b], steps: [{run: x}]}
              b: {needs: [a], steps: [{run: x}]}
              c: {needs: [d], steps: [{run: x}]}
              d: {needs: [c], steps: [{run: x}]}
            """,
            [
                (2, 15, "cycle in needs: a -> b -> a"),
                (4, 15, "cycle in needs: c -> d -> c"),
            ],
        ),
        # one tangle is one problem, naming a shortest loop through its first job
        (
            """\
            jobs:
              a: {needs: [b, c], steps: [{run: x}]}
              b: {needs: [d], steps: [{run: x}]}
              c: {needs: [a], steps: [{run: x}]}
              d: {needs: [b, a], steps: [{run: x}]}
            """,
            [(2, 18, "cycle in needs: a -> c -> a")],
        ),
        # cycles through matrix jobs are found on the YAML job ids
        (
            """\
            jobs:
              a:
                needs: m
                steps: [{run: x}]
              m:
                needs: a
                strategy: {matrix: {v: [1, 2]}}
                steps: [{run: x}]
            """,
            [(3, 12, "cycle in needs: a -> m -> a")],
        ),
        # a self-need is reported as such, not as a cycle too
        (
            """\
            jobs:
              a: {needs: [a, b], steps: [{run: x}]}
              b: {needs: a, steps: [{run: x}]}
            """,
            [(2, 15, "job 'a' needs itself"), (2, 18, "cycle in needs: a -> b -> a")],
        ),
    ],
)
def test_cycles(text: str, expected: Found) -> None:
    assert problems(dedent(text)) == expected


# --- many problems at once ---------------------------------------------------------------------


def test_every_problem_is_reported_in_document_order() -> None:
    text = dedent(
        """\
        name: ci
        triggers: push
        jobs:
          build:
            runs-on: ubuntu-latest
            timeout-minutes: 0
            steps:
              - uses: docker://alpine
              - run: make
                shell: zsh
                if: github.ref ==
          test:
            needs: [build, lint]
            steps: []
          deploy:
            needs: deploy
          9lives:
            steps: [{run: x}]
        """
    )
    found = problems(text)
    assert [(line, column) for line, column, _ in found] == [
        (2, 1),
        (6, 22),
        (8, 15),
        (10, 16),
        (11, 24),
        (13, 20),
        (14, 12),
        (15, 3),
        (16, 12),
        (17, 3),
    ]
    messages = [message for _, _, message in found]
    assert messages[0].startswith("unknown key 'triggers' in the workflow")
    assert messages[2].startswith("step 1 of job 'build' uses 'docker://alpine'")
    assert messages[5] == "job 'test' needs 'lint', which does not exist"
    assert messages[7] == "job 'deploy' has no `steps`"
    assert messages[8] == "job 'deploy' needs itself"
    assert messages[9].startswith("job id '9lives' is not valid")


def test_error_carries_problems_and_a_readable_message() -> None:
    with pytest.raises(WorkflowError) as info:
        parse_workflow("jobs:\n  a:\n    steps: []\n  b:\n")
    error = info.value
    assert error.problems == [
        Problem(3, 12, "`steps` of job 'a' must be a non-empty list of steps, not an empty list"),
        Problem(4, 3, "job 'b' must be a mapping with `steps`, not nothing"),
    ]
    assert str(error) == "; ".join(str(p) for p in error.problems)
    assert isinstance(error, ValueError)


def test_problems_across_valid_matrix_and_plain_jobs_are_all_found() -> None:
    # Problems in one job do not hide those in another, nor graph problems.
    text = dedent(
        """\
        jobs:
          m:
            strategy: {matrix: {a: [1]}}
            steps: [{run: "${{ matrix.a == }}"}]
          p:
            needs: [m, q]
            steps: [{run: x, shell: fish}]
        """
    )
    assert [line for line, _, _ in problems(text)] == [4, 6, 7]


MERGED = """\
jobs:
  a: &base
    image: py
    timeout-minutes: {timeout}
    steps: &steps
      - run: x
  b:
    <<: *base
    name: B
    steps: *steps
"""


def test_anchors_aliases_and_merge_keys() -> None:
    spec = parse_workflow(MERGED.format(timeout=3))
    b = spec.job("b")
    assert (b.display_name, b.image, b.timeout_minutes) == ("B", "py", 3.0)
    assert b.steps == spec.job("a").steps


def test_a_problem_in_a_merged_key_points_at_the_merging_mapping() -> None:
    # keys that arrive through `<<:` have no position of their own
    assert problems(MERGED.format(timeout=0)) == [
        (4, 22, "`timeout-minutes` of job 'a' must be a number greater than 0, not 0"),
        (8, 5, "`timeout-minutes` of job 'b' must be a number greater than 0, not 0"),
    ]


REAL_WORLD = """\
name: CI
on:
  push: {branches: [main]}
  pull_request:
permissions:
  contents: read
concurrency:
  group: ci-${{ github.ref }}
  cancel-in-progress: true
defaults:
  run:
    shell: bash
    working-directory: src
env:
  FORCE_COLOR: "1"
jobs:
  test:
    name: Test ${{ matrix.python }}
    runs-on: ${{ matrix.os }}
    permissions: read-all
    environment: {name: staging, url: "https://staging.example.com"}
    timeout-minutes: 30
    continue-on-error: ${{ matrix.experimental }}
    container:
      image: python:3.12
      options: --user 1001
    services:
      postgres:
        image: postgres:16
        env: {POSTGRES_PASSWORD: pw}
        ports: ["5432:5432"]
    kubernetes:
      resources: {requests: {cpu: 500m}, limits: {memory: 1Gi}}
      node-selector: {pool: ci}
    outputs:
      version: ${{ steps.v.outputs.version }}
    strategy:
      fail-fast: false
      matrix:
        os: [ubuntu-latest]
        python: ["3.11", "3.12"]
        experimental: [false]
    steps:
      - uses: actions/checkout@v4
        with: {fetch-depth: 0}
      - id: v
        run: echo "version=1" >> "$GITHUB_OUTPUT"
        shell: python3 {0}
"""


def test_real_world_keys_are_accepted_with_their_meaning() -> None:
    spec = parse_workflow(REAL_WORLD)
    assert spec.defaults.shell == "bash"
    assert spec.defaults.working_directory == "src"
    assert spec.concurrency is not None
    assert spec.concurrency.cancel_in_progress is True
    first = spec.jobs[0]
    assert first.name == "test (ubuntu-latest, 3.11, false)"
    assert first.display_name == "Test 3.11"
    assert first.runs_on == ("ubuntu-latest",)
    assert first.environment is not None
    assert (first.environment.name, first.environment.url) == (
        "staging",
        "https://staging.example.com",
    )
    assert first.image == "python:3.12"
    assert first.continue_on_error == "false"  # matrix-substituted, evaluated at run time
    assert [(s.name, s.image, s.ports) for s in first.services] == [
        ("postgres", "postgres:16", (5432,))
    ]
    assert first.kubernetes is not None
    assert first.kubernetes.resources == {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}
    assert first.kubernetes.node_selector == {"pool": "ci"}
    assert first.outputs == {"version": "${{ steps.v.outputs.version }}"}
    checkout, version = first.steps
    assert (checkout.uses, checkout.with_, checkout.name) == (
        "actions/checkout@v4",
        {"fetch-depth": "0"},
        "Run actions/checkout@v4",
    )
    assert (version.id, version.shell) == ("v", "python3 {0}")


def test_job_and_step_limits_are_checked_before_anything_else() -> None:
    many_jobs = "jobs:\n" + "".join(f"  j{i}:\n    steps: [{{run: x}}]\n" for i in range(257))
    assert problems(many_jobs) == [(2, 3, "the workflow has 257 jobs; the limit is 256")]
    many_steps = "jobs:\n  a:\n    steps:\n" + "      - run: x\n" * 1001
    assert problems(many_steps) == [(4, 7, "job 'a' has 1001 steps; the limit is 1000")]
    matrix = (
        "jobs:\n  a:\n    strategy: {matrix: {x: [" + ", ".join(map(str, range(200))) + "]}}\n"
        "    steps: [{run: x}]\n  b:\n    strategy: {matrix: {y: ["
        + ", ".join(map(str, range(100)))
        + "]}}\n    steps: [{run: x}]\n"
    )
    assert problems(matrix) == [
        (2, 3, "the workflow expands to 300 jobs (matrix combinations counted); the limit is 256")
    ]


def test_empty_run_is_accepted_as_on_github() -> None:
    [job] = parse_workflow("jobs:\n  a:\n    steps:\n      - run: ''\n").jobs
    assert job.steps[0].run == ""
