"""Matrix expansion: GitHub's include/exclude semantics, naming, substitution and limits."""

from __future__ import annotations

from textwrap import dedent

import pytest

from app.workflow import WorkflowError, parse_workflow
from app.workflow.matrix import (
    MAX_COMBINATIONS,
    combination_name,
    expand_matrix,
    key_order,
    product_size,
    references,
    substitute,
)


def problems(text: str) -> list[tuple[int, int, str]]:
    with pytest.raises(WorkflowError) as info:
        parse_workflow(dedent(text))
    return [(p.line, p.column, p.message) for p in info.value.problems]


# --- expand_matrix on its own ------------------------------------------------------------------


def test_product_is_in_key_then_value_order() -> None:
    assert expand_matrix({"os": ["linux", "mac"], "py": ["3.11", "3.12"]}) == [
        {"os": "linux", "py": "3.11"},
        {"os": "linux", "py": "3.12"},
        {"os": "mac", "py": "3.11"},
        {"os": "mac", "py": "3.12"},
    ]


def test_exclude_removes_combinations_matching_all_its_keys() -> None:
    axes = {"os": ["linux", "mac"], "py": ["3.11", "3.12"]}
    assert expand_matrix(axes, exclude=[{"os": "mac", "py": "3.11"}]) == [
        {"os": "linux", "py": "3.11"},
        {"os": "linux", "py": "3.12"},
        {"os": "mac", "py": "3.12"},
    ]
    # a partial entry removes every combination it matches
    assert expand_matrix(axes, exclude=[{"os": "mac"}]) == [
        {"os": "linux", "py": "3.11"},
        {"os": "linux", "py": "3.12"},
    ]
    # an entry with a value no combination has removes nothing
    assert len(expand_matrix(axes, exclude=[{"os": "windows"}])) == 4


def test_github_reference_example() -> None:
    # The example from GitHub's workflow syntax reference, with its documented result: extra keys
    # merge into matching base combinations (later includes may overwrite added keys), entries
    # that fit no base combination become new ones, and never merge into each other.
    axes = {"fruit": ["apple", "pear"], "animal": ["cat", "dog"]}
    include = [
        {"color": "green"},
        {"color": "pink", "animal": "cat"},
        {"fruit": "apple", "shape": "circle"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]
    assert expand_matrix(axes, include=include) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_include_never_overwrites_an_axis_value() -> None:
    # {py: 3.13} contradicts every base combination, so it is added rather than merged
    assert expand_matrix({"py": ["3.11"]}, include=[{"py": "3.13", "tag": "x"}]) == [
        {"py": "3.11"},
        {"py": "3.13", "tag": "x"},
    ]


def test_include_does_not_merge_into_excluded_combinations() -> None:
    axes = {"os": ["linux", "mac"]}
    result = expand_matrix(axes, include=[{"os": "mac", "arm": "yes"}], exclude=[{"os": "mac"}])
    assert result == [{"os": "linux"}, {"os": "mac", "arm": "yes"}]


def test_only_include_makes_one_combination_per_entry() -> None:
    assert expand_matrix({}, include=[{"a": "1"}, {"b": "2"}]) == [{"a": "1"}, {"b": "2"}]


def test_no_axes_and_no_include_is_empty() -> None:
    assert expand_matrix({}) == []


def test_combination_keys_follow_axis_order_then_include_order() -> None:
    include = [{"z": "1", "os": "linux"}, {"a": "2"}]
    assert key_order({"os": ["linux"], "py": ["3"]}, include) == ["os", "py", "z", "a"]
    [combination] = expand_matrix({"os": ["linux"], "py": ["3"]}, include=include)
    assert list(combination) == ["os", "py", "z", "a"]
    # a new combination is ordered the same way, whatever the order in its entry
    assert list(expand_matrix({"os": ["mac"]}, include=[{"z": "1", "os": "x"}])[1]) == ["os", "z"]


def test_product_size() -> None:
    assert product_size({"a": ["1", "2"], "b": ["1", "2", "3"]}) == 6
    assert product_size({}) == 0


def test_combination_name() -> None:
    assert combination_name("test", {"py": "3.11", "os": "linux"}) == "test (3.11, linux)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${{ matrix.py }}", "3.12"),
        ("${{matrix.py}}", "3.12"),
        ("${{   matrix.py\t}}", "3.12"),
        ("v${{ matrix.py }}-${{ matrix.os }}", "v3.12-linux"),
        ("${{ matrix.missing }}", ""),  # checked by the parser; "" like GitHub
        (
            "${PY} $PY ${{ github.ref }} ${{ matrix['py'] }}",
            "${PY} $PY ${{ github.ref }} ${{ matrix['py'] }}",
        ),
        ("${{ matrix.py }}${{ matrix.py }}", "3.123.12"),
        ("${{ MATRIX.py }}", "${{ MATRIX.py }}"),
    ],
)
def test_substitute(text: str, expected: str) -> None:
    assert substitute(text, {"py": "3.12", "os": "linux"}) == expected


def test_references() -> None:
    assert references("${{ matrix.a }} ${{matrix.b-c}} ${{ github.x }} ${{ matrix.a }}") == [
        "a",
        "b-c",
        "a",
    ]


# --- through parse_workflow --------------------------------------------------------------------


def test_matrix_jobs_are_named_and_substituted() -> None:
    spec = parse_workflow(
        dedent(
            """\
            env: {W: "${{ matrix.py }}"}
            jobs:
              test:
                name: Test on ${{ matrix.py }}/${{ matrix.os }}
                image: python:${{ matrix.py }}-slim
                env: {PY: "${{ matrix.py }}", OTHER: "${PY}"}
                strategy:
                  matrix:
                    py: ["3.11", 3.12]
                    os: [linux]
                    include: [{py: "3.11", extra: yes}]
                steps:
                  - name: step ${{ matrix.py }}
                    run: |
                      echo ${{ matrix.py }} ${{ matrix.extra }}
                    env: {S: "${{ matrix.os }}"}
                    working-directory: src/${{ matrix.os }}
                  - run: "  python${{ matrix.py }} -V  "
            """
        )
    )
    first, second = spec.jobs
    assert (first.name, second.name) == ("test (3.11, linux, yes)", "test (3.12, linux)")
    assert first.key == second.key == "test"
    assert first.display_name == "Test on 3.11/linux"
    assert first.image == "python:3.11-slim"
    assert first.env == {"PY": "3.11", "OTHER": "${PY}"}
    assert first.matrix == {"py": "3.11", "os": "linux", "extra": "yes"}
    assert second.matrix == {"py": "3.12", "os": "linux"}
    step, default_named = first.steps
    assert step.name == "step 3.11"
    assert step.run == "echo 3.11 yes\n"
    assert step.env == {"S": "linux"}
    assert step.working_directory == "src/linux"
    assert default_named.name == "Run python3.11 -V"
    # an include-only key a combination lacks becomes ""
    assert second.steps[0].run == "echo 3.12 \n"
    # workflow env is not per job, so it is left as written
    assert spec.env == {"W": "${{ matrix.py }}"}


def test_matrix_values_are_strings() -> None:
    spec = parse_workflow(
        dedent(
            """\
            jobs:
              t:
                strategy:
                  matrix: {a: [1, 2.5, 3.0, true, false, null, "x"]}
                steps: [{run: "echo ${{ matrix.a }}"}]
            """
        )
    )
    assert [job.matrix for job in spec.jobs] == [
        {"a": v} for v in ["1", "2.5", "3", "true", "false", "", "x"]
    ]


def test_strategy_settings_are_kept_on_every_combination() -> None:
    spec = parse_workflow(
        dedent(
            """\
            jobs:
              plain:
                steps: [{run: x}]
              t:
                strategy:
                  matrix: {a: [1, 2]}
                  fail-fast: false
                  max-parallel: 1
                steps: [{run: x}]
              u:
                strategy: {matrix: {a: [1]}}
                steps: [{run: x}]
            """
        )
    )
    assert [(j.name, j.fail_fast, j.max_parallel) for j in spec.jobs] == [
        ("plain", True, None),
        ("t (1)", False, 1),
        ("t (2)", False, 1),
        ("u (1)", True, None),
    ]


def test_needs_on_a_matrix_job_means_every_combination() -> None:
    spec = parse_workflow(
        dedent(
            """\
            jobs:
              deploy:
                needs: [test, lint]
                steps: [{run: x}]
              test:
                needs: lint
                strategy: {matrix: {a: [1, 2], b: [x]}}
                steps: [{run: x}]
              lint:
                strategy: {matrix: {include: [{tool: ruff}, {tool: mypy}]}}
                steps: [{run: x}]
            """
        )
    )
    assert [(j.name, j.index) for j in spec.jobs] == [
        ("lint (ruff)", 0),
        ("lint (mypy)", 1),
        ("test (1, x)", 2),
        ("test (2, x)", 3),
        ("deploy", 4),
    ]
    assert spec.job("test (1, x)").needs == ("lint (ruff)", "lint (mypy)")
    assert spec.job("deploy").needs == ("test (1, x)", "test (2, x)", "lint (ruff)", "lint (mypy)")


def test_exactly_the_limit_is_allowed() -> None:
    values = ", ".join(str(i) for i in range(16))
    spec = parse_workflow(
        f"jobs:\n  t:\n    strategy:\n      matrix: {{a: [{values}], b: [{values}]}}\n"
        "    steps: [{run: x}]\n"
    )
    assert len(spec.jobs) == MAX_COMBINATIONS


def test_excludes_count_towards_the_limit() -> None:
    values = ", ".join(str(i) for i in range(17))
    # 17 x 16 = 272 before exclusion; excluding a=0 leaves 16 x 16 = 256
    spec = parse_workflow(
        dedent(
            f"""\
            jobs:
              t:
                strategy:
                  matrix: {{a: [{values}], b: [{values}], exclude: [{{a: 0}}, {{b: 16}}]}}
                steps: [{{run: x}}]
            """
        )
    )
    assert len(spec.jobs) == 256


@pytest.mark.parametrize(
    ("matrix", "line", "column", "message"),
    [
        (
            "{a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "
            "c: [1, 2, 3]}",
            4,
            7,
            "matrix of job 't' expands to 300 combinations; the limit is 256",
        ),
        (
            "{a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], include: [{a: 17}]}",
            4,
            7,
            None,  # 17 combinations: fine (control case for the next one)
        ),
        (
            "{a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], "
            "b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16], include: [{a: 17}]}",
            4,
            7,
            "matrix of job 't' expands to 257 combinations; the limit is 256",
        ),
        (
            "{a: [1, 2], exclude: [{a: 1}, {a: 2}]}",
            4,
            7,
            "matrix of job 't' expands to no combinations",
        ),
        ("{}", 4, 7, "matrix of job 't' expands to no combinations"),
        (
            "{a: [1, 1]}",
            4,
            7,
            "matrix of job 't' produces the combination 't (1)' more than once",
        ),
        (
            "{a: [1], include: [{b: 2}, {a: 3}, {a: 3}]}",
            4,
            7,
            "matrix of job 't' produces the combination 't (3)' more than once",
        ),
    ],
)
def test_matrix_size_problems(matrix: str, line: int, column: int, message: str | None) -> None:
    text = f"jobs:\n  t:\n    strategy:\n      matrix: {matrix}\n    steps: [{{run: x}}]\n"
    if message is None:
        assert parse_workflow(text).jobs
    else:
        assert problems(text) == [(line, column, message)]


def test_a_huge_matrix_is_refused_without_enumerating_it() -> None:
    axis = "[" + ", ".join(str(i) for i in range(100)) + "]"
    text = (
        "jobs:\n  t:\n    strategy:\n      matrix: "
        f"{{a: {axis}, b: {axis}, c: {axis}, d: {axis}, exclude: [{{a: 1}}]}}\n"
        "    steps: [{run: x}]\n"
    )
    assert problems(text) == [
        (
            4,
            7,
            "matrix of job 't' expands to 100000000 combinations before `exclude`; "
            "the limit is 256",
        )
    ]


MATRIX_SHAPE_CASES = [
    (
        "matrix-not-mapping",
        "      matrix: [a, b]\n",
        [(4, 15, "`matrix` of job 't' must be a mapping of keys to lists of values, not a list")],
    ),
    (
        # issue 11: a computed matrix is accepted (expanded at run time); its syntax is checked
        "matrix-expression-syntax",
        "      matrix: ${{ fromJSON(needs.x.outputs.m }}\n",
        [
            (
                4,
                7,
                "matrix of job 't': Unexpected end of expression after 'm' "
                "(in '${{ fromJSON(needs.x.outputs.m }}')",
            )
        ],
    ),
    (
        "axis-not-list",
        "      matrix:\n        py: 3.12\n",
        [(5, 13, "matrix key 'py' of job 't' must have a non-empty list of values, not 3.12")],
    ),
    (
        "axis-empty",
        "      matrix:\n        py: []\n",
        [
            (
                5,
                13,
                "matrix key 'py' of job 't' must have a non-empty list of values, "
                "not an empty list",
            )
        ],
    ),
    (
        "axis-null",
        "      matrix:\n        py:\n",
        [(5, 9, "matrix key 'py' of job 't' must have a non-empty list of values, not nothing")],
    ),
    (
        "bad-axis-name",
        "      matrix:\n        py version: [1]\n",
        [
            (
                5,
                9,
                "matrix key 'py version' in the matrix of job 't' is not valid: it must start "
                "with a letter or '_' and contain only letters, digits, '_' and '-'",
            )
        ],
    ),
    (
        "include-not-list",
        "      matrix:\n        a: [1]\n        include: {b: 1}\n",
        [(6, 18, "`include` of the matrix of job 't' must be a list of mappings, not a mapping")],
    ),
    (
        "include-entry-not-mapping",
        "      matrix:\n        a: [1]\n        include: [b, {}]\n",
        [
            (
                6,
                19,
                "`include` entry 1 of the matrix of job 't' must be a non-empty mapping, not 'b'",
            ),
            (
                6,
                22,
                "`include` entry 2 of the matrix of job 't' must be a non-empty mapping, "
                "not an empty mapping",
            ),
        ],
    ),
    (
        "include-bad-key",
        "      matrix:\n        include:\n          - {'b c': 2}\n",
        [
            (
                6,
                14,
                "matrix key 'b c' in `include` entry 1 of the matrix of job 't' is not valid: "
                "it must start with a letter or '_' and contain only letters, digits, '_' and '-'",
            )
        ],
    ),
    (
        "exclude-not-list",
        "      matrix:\n        a: [1, 2]\n        exclude: 3\n",
        [(6, 18, "`exclude` of the matrix of job 't' must be a list of mappings, not 3")],
    ),
    (
        "exclude-unknown-key",
        "      matrix:\n        a: [1, 2]\n        exclude:\n          - a: 1\n            b: 2\n",
        [
            (
                8,
                13,
                "`exclude` entry 1 of the matrix of job 't' names 'b', which is not a key of "
                "the matrix",
            )
        ],
    ),
    (
        "exclude-key-of-invalid-axis-is-not-reported-twice",
        "      matrix:\n        a: []\n        exclude: [{a: 1}]\n",
        [
            (
                5,
                12,
                "matrix key 'a' of job 't' must have a non-empty list of values, not an empty list",
            )
        ],
    ),
]


@pytest.mark.parametrize(
    ("matrix_yaml", "expected"),
    [pytest.param(m, e, id=i) for i, m, e in MATRIX_SHAPE_CASES],
)
def test_matrix_shape_problems(matrix_yaml: str, expected: list[tuple[int, int, str]]) -> None:
    text = "jobs:\n  t:\n    strategy:\n" + matrix_yaml + "    steps: [{run: x}]\n"
    assert problems(text) == expected


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (
            "    strategy: [1]\n",
            [(3, 15, "`strategy` of job 't' must be a mapping with a `matrix`, not a list")],
        ),
        (
            "    strategy:\n      matrix: {a: [1]}\n      fail-fast: 'no'\n",
            [
                (
                    5,
                    18,
                    "`fail-fast` of the strategy of job 't' must be true or false, not 'no'",
                )
            ],
        ),
        *[
            (
                f"    strategy:\n      matrix: {{a: [1]}}\n      max-parallel: {bad}\n",
                [
                    (
                        5,
                        21,
                        "`max-parallel` of the strategy of job 't' must be a whole number of "
                        f"at least 1, not {shown}",
                    )
                ],
            )
            for bad, shown in [
                ("0", "0"),
                ("-1", "-1"),
                ("1.5", "1.5"),
                ("true", "true"),
                ("'2'", "'2'"),
            ]
        ],
        (
            "    strategy:\n      matrix: {a: [1]}\n      max-jobs: 2\n",
            [
                (
                    5,
                    7,
                    "unknown key 'max-jobs' in the strategy of job 't'; "
                    "allowed keys: matrix, fail-fast, max-parallel",
                )
            ],
        ),
    ],
)
def test_strategy_problems(strategy: str, expected: list[tuple[int, int, str]]) -> None:
    text = "jobs:\n  t:\n" + strategy + "    steps: [{run: x}]\n"
    assert problems(text) == expected


@pytest.mark.parametrize(
    "field_yaml",
    [
        "    name: T ${{ matrix.nope }}\n",
        "    image: img:${{ matrix.nope }}\n",
        "    env: {A: '${{ matrix.nope }}'}\n",
    ],
)
def test_a_matrix_key_the_matrix_lacks_is_accepted_in_job_fields(field_yaml: str) -> None:
    # GitHub evaluates an undefined matrix key to null (''); tokio's CI relies on it.
    text = (
        "jobs:\n  t:\n"
        + field_yaml
        + "    strategy: {matrix: {a: [1], include: [{b: 2}]}}\n    steps: [{run: x}]\n"
    )
    assert [job.name for job in parse_workflow(text).jobs] == ["t (1, 2)"]


def test_a_key_only_some_include_rows_set_is_empty_in_the_others() -> None:
    text = dedent(
        """\
        jobs:
          t:
            strategy:
              matrix:
                include:
                  - {target: a, extra: x}
                  - {target: b}
            steps:
              - name: build ${{ matrix.target }} ${{ matrix.extra }} ${{ matrix.never }}
                run: echo "[${{ matrix.extra }}]"
          plain:
            steps:
              - run: echo "[${{ matrix.os }}]"
        """
    )
    spec = parse_workflow(text)
    names = {job.name: [step.name for step in job.steps] for job in spec.jobs}
    assert names == {
        "t (a, x)": ["build a x "],
        "t (b)": ["build b  "],
        "plain": ['Run echo "[]"'],
    }


def test_matrix_expressions_are_still_checked_for_syntax() -> None:
    text = "jobs:\n  t:\n    steps:\n      - run: echo ${{ matrix.py == }}\n"
    assert [line for line, _, _ in problems(text)] == [4]


def test_references_are_not_checked_against_a_broken_matrix() -> None:
    # the matrix problem is the one to fix; guessing its keys would add noise
    text = "jobs:\n  t:\n    strategy: {matrix: {a: []}}\n    steps: [{run: '${{ matrix.a }}'}]\n"
    assert [message for _, _, message in problems(text)] == [
        "matrix key 'a' of job 't' must have a non-empty list of values, not an empty list"
    ]


def test_matrix_values_may_be_lists_and_mappings() -> None:
    # issue 11: GitHub accepts any value; lists and mappings are shown as JSON in names.
    text = (
        "jobs:\n  t:\n    strategy:\n      matrix:\n"
        "        cfg: [{os: linux, v: 1}, [a, b]]\n"
        "        include:\n          - {cfg: [a, b], extra: {k: v}}\n"
        "    steps: [{run: 'echo ${{ matrix.cfg }}'}]\n"
    )
    jobs = parse_workflow(text).jobs
    assert [job.name for job in jobs] == ['t ({"os":"linux","v":1})', 't (["a","b"], {"k":"v"})']
    assert jobs[0].matrix == {"cfg": {"os": "linux", "v": 1}}
    assert jobs[1].matrix == {"cfg": ["a", "b"], "extra": {"k": "v"}}
    assert jobs[0].steps[0].run == 'echo {"os":"linux","v":1}'


def test_strategy_without_matrix_is_one_plain_job() -> None:
    # issue 11 / act's model/testdata/strategy: GitHub accepts a strategy with no matrix
    text = "jobs:\n  t:\n    strategy:\n      fail-fast: false\n    steps: [{run: x}]\n"
    [job] = parse_workflow(text).jobs
    assert (job.name, job.matrix) == ("t", None)
