"""The engine's public API: templates and their offsets, `if:` semantics, callbacks, limits."""

from __future__ import annotations

from typing import Any

import pytest

from app.workflow.expressions import (
    AVAILABILITY,
    MAX_EXPRESSION_LENGTH,
    ExpressionError,
    ExpressionEvalError,
    ExpressionSyntaxError,
    Segment,
    Status,
    check,
    check_key,
    condition,
    evaluate,
    evaluate_template,
    interpolate,
    parse,
    split_template,
    to_string,
    uses_status_function,
)

CONTEXTS: dict[str, Any] = {
    "github": {"ref": "refs/heads/main", "event_name": "push", "event": {"number": 7}},
    "env": {"NAME": "world", "EMPTY": ""},
    "matrix": {"os": "linux", "versions": [3, 4]},
    "needs": {"build": {"outputs": {"list": '["a", "b"]'}, "result": "success"}},
}


# -- split_template ------------------------------------------------------------------------------
def test_split_template_literal_and_expression_offsets() -> None:
    text = "a ${{ x }} b"
    assert split_template(text) == [
        Segment("a ", None, 0),
        Segment(None, " x ", 5),
        Segment(" b", None, 10),
    ]
    assert text[5:8] == " x "


def test_split_template_without_expressions_and_empty() -> None:
    assert split_template("plain") == [Segment("plain", None, 0)]
    assert split_template("") == []


def test_split_template_adjacent_expressions() -> None:
    assert split_template("${{a}}${{b}}") == [Segment(None, "a", 3), Segment(None, "b", 9)]


def test_split_template_ignores_braces_inside_strings() -> None:
    text = "x ${{ format('}}{0}', 'a') }} y"
    segments = split_template(text)
    assert [s.expression for s in segments if s.expression] == [" format('}}{0}', 'a') "]
    assert segments[-1] == Segment(" y", None, len(text) - 2)


def test_split_template_multiline_offsets_are_exact() -> None:
    text = "echo one\necho ${{ github.ref }}\n  echo ${{ env.NAME }}\n"
    expressions = [s for s in split_template(text) if s.expression is not None]
    for segment in expressions:
        assert segment.expression is not None
        assert text[segment.offset : segment.offset + len(segment.expression)] == (
            segment.expression
        )
        assert text[segment.offset - 3 : segment.offset] == "${{"
    assert [s.offset for s in expressions] == [17, 42]


@pytest.mark.parametrize(
    ("text", "offset"),
    [("${{ x", 0), ("ab ${{ x }} ${{ y", 12), ("line\n  ${{ 'unclosed }}", 7), ("${{ }", 0)],
)
def test_split_template_unclosed_reports_the_opening(text: str, offset: int) -> None:
    with pytest.raises(ExpressionSyntaxError) as info:
        split_template(text)
    assert info.value.offset == offset
    assert text[offset : offset + 3] == "${{"


# -- check ---------------------------------------------------------------------------------------
def test_check_clean_text() -> None:
    assert check("echo ${{ github.ref }} and ${{ env.NAME }}") == []
    assert check("no expressions here") == []


def test_check_offsets_point_into_the_text() -> None:
    text = "run: |\n  echo ${{ github.ref == }}\n  echo ${{ nope(1) }}\n"
    problems = check(text)
    assert len(problems) == 2
    (first, message1), (second, message2) = problems
    assert text[first : first + 2] == "==" and "end of expression" in message1
    assert text[second : second + 4] == "nope" and "Unrecognized function" in message2


def test_check_unclosed_and_empty_expressions() -> None:
    assert check("a ${{ b") == [
        (2, "The expression is not closed: '${{' was found without a matching '}}'")
    ]
    [(offset, message)] = check("a ${{   }} b")
    assert offset == 5 and "expected" in message


def test_check_allowed_contexts_case_insensitive() -> None:
    text = "${{ GitHub.ref }} ${{ secrets.TOKEN }} ${{ matrix.os }}"
    problems = check(text, allowed_contexts=["github", "matrix"])
    assert len(problems) == 1
    offset, message = problems[0]
    assert text[offset : offset + 7] == "secrets" and "secrets" in message
    assert check(text) == []


def test_check_property_names_are_not_contexts() -> None:
    assert check("${{ github.secrets.env }}", allowed_contexts=["github"]) == []


def test_check_arity_and_status_functions() -> None:
    text = "${{ contains('a') }} ${{ success() }} ${{ hashFiles('x') }}"
    problems = check(text, allow_status_functions=False, allow_hash_files=False)
    assert [text[o : o + 5] for o, _ in problems] == ["conta", "succe", "hashF"]
    assert "Too few" in problems[0][1]
    assert len(check(text)) == 1


# -- evaluate / interpolate / evaluate_template ---------------------------------------------------
def test_evaluate_accepts_a_parsed_tree() -> None:
    tree = parse("matrix.os == 'LINUX'")
    assert evaluate(tree, CONTEXTS) is True
    assert parse("matrix.os == 'LINUX'") is tree  # cached by text


def test_evaluate_context_names_case_insensitive_and_missing_is_null() -> None:
    assert evaluate("GITHUB.EVENT.NUMBER", CONTEXTS) == 7
    assert evaluate("github.event.pull_request.head.ref", CONTEXTS) is None
    assert evaluate("steps.x.outputs.y", CONTEXTS) is None


def test_evaluate_unknown_context_is_an_error() -> None:
    with pytest.raises(ExpressionEvalError, match="nosuch"):
        evaluate("nosuch.thing", CONTEXTS)


def test_errors_share_a_base_class() -> None:
    assert issubclass(ExpressionSyntaxError, ExpressionError)
    assert issubclass(ExpressionEvalError, ExpressionError)
    assert issubclass(ExpressionError, ValueError)


def test_interpolate_uses_github_string_conversion() -> None:
    text = "hi ${{ env.NAME }} ${{ env.MISSING }}|${{ 1.50 }}|${{ true }}|${{ matrix.versions }}"
    assert interpolate(text, CONTEXTS) == "hi world |1.5|true|[\n  3,\n  4\n]"


def test_interpolate_syntax_error_offset_is_in_the_text() -> None:
    text = "echo\necho ${{ github.ref == }}"
    with pytest.raises(ExpressionSyntaxError) as info:
        interpolate(text, CONTEXTS)
    assert text[info.value.offset : info.value.offset + 2] == "=="


def test_interpolate_evaluation_error() -> None:
    with pytest.raises(ExpressionEvalError, match="fromJSON"):
        interpolate("x ${{ fromJSON('{') }}", CONTEXTS)


def test_evaluate_template_returns_the_raw_value_of_a_lone_expression() -> None:
    assert evaluate_template("${{ fromJSON(needs.build.outputs.list) }}", CONTEXTS) == ["a", "b"]
    assert evaluate_template("  ${{ matrix.versions }}\n", CONTEXTS) == [3, 4]
    assert evaluate_template("${{ 3 }}", CONTEXTS) == 3
    assert evaluate_template("${{ null }}", CONTEXTS) is None


def test_evaluate_template_interpolates_otherwise() -> None:
    assert evaluate_template("v${{ 3 }}", CONTEXTS) == "v3"
    assert evaluate_template("${{ 1 }}${{ 2 }}", CONTEXTS) == "12"
    assert evaluate_template("plain", CONTEXTS) == "plain"


def test_to_string() -> None:
    assert [to_string(v) for v in (None, True, False, 3, 2.5, -0.0, "s")] == [
        "",
        "true",
        "false",
        "3",
        "2.5",
        "0",
        "s",
    ]
    assert to_string({"a": 1}) == '{\n  "a": 1\n}'
    assert to_string([]) == "[]"


# -- status functions, hashFiles -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status(), {"success": True, "failure": False, "cancelled": False, "always": True}),
        (
            Status(success=False, failure=True),
            {"success": False, "failure": True, "cancelled": False, "always": True},
        ),
        (
            Status(success=False, cancelled=True),
            {"success": False, "failure": False, "cancelled": True, "always": True},
        ),
    ],
)
def test_status_functions_report_the_callers_status(
    status: Status, expected: dict[str, bool]
) -> None:
    for name, value in expected.items():
        assert evaluate(f"{name}()", {}, status=status) is value
        assert evaluate(f"{name.upper()}()", {}, status=status) is value


def test_hash_files_calls_the_callback_with_the_patterns() -> None:
    calls: list[list[str]] = []

    def fake_hash(patterns: list[str]) -> str:
        calls.append(patterns)
        return "abc123"

    value = evaluate(
        "format('deps-{0}', hashFiles('**/*.lock', 'x.txt'))", {}, hash_files=fake_hash
    )
    assert value == "deps-abc123"
    assert calls == [["**/*.lock", "x.txt"]]


def test_hash_files_without_a_callback_is_an_evaluation_error() -> None:
    with pytest.raises(ExpressionEvalError, match="hashFiles"):
        evaluate("hashFiles('x')", {})


# -- condition -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "status", "expected"),
    [
        ("github.ref == 'refs/heads/main'", Status(), True),
        ("${{ github.ref == 'refs/heads/main' }}", Status(), True),
        ("  ${{ github.ref == 'refs/heads/other' }}  ", Status(), False),
        # No status function: implicitly `success() && (...)`.
        ("github.ref == 'refs/heads/main'", Status(success=False, failure=True), False),
        ("always()", Status(success=False, failure=True), True),
        ("failure()", Status(success=False, failure=True), True),
        ("failure()", Status(), False),
        ("${{ cancelled() }}", Status(success=False, cancelled=True), True),
        ("!cancelled()", Status(success=False, failure=True), True),
        ("always() && github.event_name == 'pull_request'", Status(success=False), False),
        ("success() || failure()", Status(success=False, failure=True), True),
        ("env.EMPTY", Status(), False),
        ("env.NAME", Status(), True),
        ("matrix.versions", Status(), True),
        ("", Status(), False),
        # A text mixing ${{ }} with other text is a non-empty string: truthy, as on GitHub.
        ("${{ false }} == true", Status(), True),
        ("${{ false }} == true", Status(success=False), False),
    ],
)
def test_condition(text: str, status: Status, expected: bool) -> None:
    assert condition(text, CONTEXTS, status=status) is expected


def test_condition_does_not_evaluate_after_a_failure() -> None:
    # Implicit success() short-circuits: the bad JSON is never read.
    assert condition("fromJSON('{')", {}, status=Status(success=False, failure=True)) is False
    with pytest.raises(ExpressionEvalError):
        condition("fromJSON('{')", {}, status=Status())


def test_condition_syntax_error_offset_is_in_the_text() -> None:
    text = "${{ github.ref == }}"
    with pytest.raises(ExpressionSyntaxError) as info:
        condition(text, CONTEXTS, status=Status())
    assert text[info.value.offset : info.value.offset + 2] == "=="


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("success()", True),
        ("${{ always() }}", True),
        ("github.ref == 'x' || FAILURE()", True),
        ("!cancelled()", True),
        ("github.ref == 'x'", False),
        ("contains('success()', 'x')", False),
        ("github.success", False),
        ("not valid ((", False),
    ],
)
def test_uses_status_function(text: str, expected: bool) -> None:
    assert uses_status_function(text) is expected


# -- hostile input: fails cleanly (a syntax or evaluation error) and fast -------------------------
@pytest.mark.parametrize(
    "expression",
    [
        "(" * 100_000 + "1" + ")" * 100_000,
        "(" * 60 + "1" + ")" * 60,
        "!" * 10_000 + "true",
        "a" + ".b" * 5_000,
        "a" + "[0]" * 60,
        "x" * (MAX_EXPRESSION_LENGTH + 1),
        "'" + "a" * 50_000 + "'",
        "format(" * 1_000 + "'x'" + ")" * 1_000,
        "1 == " * 4_000 + "1",
        "1 < " * 60 + "1",
        "'unclosed" + " " * 10_000,
        "\x00\x01",
    ],
)
def test_hostile_syntax_is_refused(expression: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        evaluate(expression, {"a": {}})


def test_long_flat_chains_within_the_limit_evaluate() -> None:
    expression = " || ".join(["false"] * 2_000 + ["'last'"])
    assert len(expression) < MAX_EXPRESSION_LENGTH
    assert evaluate(expression, {}) == "last"


@pytest.mark.parametrize(
    "expression",
    [
        # Each level doubles the string: 2**45 characters if nothing stopped it.
        "format('{0}{0}', " * 45 + "'ab'" + ")" * 45,
        # Five items joined by a 1.1 MB separator: more than the budget of one evaluation.
        "join(big.more, toJSON(big))",
        "fromJSON('" + "[" * 10_000 + "')",
    ],
)
def test_hostile_evaluation_is_refused(expression: str) -> None:
    big = {"key": "v" * 500_000, "more": ["x" * 100_000] * 5}
    with pytest.raises(ExpressionEvalError):
        evaluate(expression, {"big": big})


def test_deeply_nested_context_data_is_refused_by_tojson() -> None:
    data: Any = "leaf"
    for _ in range(5_000):
        data = [data]
    with pytest.raises(ExpressionEvalError, match="nested"):
        evaluate("toJSON(deep)", {"deep": data})


# -- context availability per workflow key --------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "text", "bad"),
    [
        ("jobs.<job_id>.if", "${{ needs.a.result == 'success' && success() }}", []),
        ("jobs.<job_id>.if", "github.ref == 'x' && env.X", []),  # bare text is not a template
        ("jobs.<job_id>.if", "${{ env.X }}", ["env"]),
        ("jobs.<job_id>.if", "${{ secrets.TOKEN && matrix.os }}", ["secrets", "matrix"]),
        ("jobs.<job_id>.runs-on", "${{ matrix.os }}", []),
        ("jobs.<job_id>.runs-on", "${{ env.OS }}", ["env"]),
        ("jobs.<job_id>.strategy", "${{ fromJSON(needs.a.outputs.m) }}", []),
        ("jobs.<job_id>.strategy", "${{ matrix.x }}", ["matrix"]),
        ("jobs.<job_id>.steps.if", "${{ steps.a.outputs.x && always() }}", []),
        ("jobs.<job_id>.steps.if", "${{ secrets.TOKEN }}", ["secrets"]),
        ("jobs.<job_id>.steps.run", "echo ${{ secrets.TOKEN }} ${{ hashFiles('x') }}", []),
        ("jobs.<job_id>.steps.run", "${{ success() }}", ["success"]),
        ("jobs.<job_id>.env", "${{ hashFiles('x') }}", ["hashFiles"]),
        ("env", "${{ secrets.A }} ${{ github.sha }}", []),
        ("env", "${{ matrix.a }}", ["matrix"]),
        ("run-name", "${{ inputs.name }} by ${{ github.actor }}", []),
        ("jobs.<job_id>.outputs.<output_id>", "${{ steps.a.outputs.b }}", []),
    ],
)
def test_check_key_follows_githubs_context_availability(
    key: str, text: str, bad: list[str]
) -> None:
    problems = check_key(key, text)
    assert [
        text[offset : offset + len(name)] for (offset, _), name in zip(problems, bad, strict=True)
    ] == bad


def test_availability_covers_the_keys_that_take_expressions() -> None:
    for key in ("jobs.<job_id>.if", "jobs.<job_id>.steps.if", "jobs.<job_id>.steps.run", "env"):
        assert "github" in AVAILABILITY[key].contexts
