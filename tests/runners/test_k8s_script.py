"""The Kubernetes runner's pure parts: names, quoting, the step script (run for real), markers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from app.runners.base import StepRun
from app.runners.k8s_script import (
    WORKSPACE,
    EnvPlan,
    Event,
    JobEnd,
    MarkerParser,
    Output,
    StepEnd,
    StepStart,
    build_script,
    installation_id,
    job_label,
    k8s_escape,
    k8s_job_name,
    marker_token,
    plan_env,
    secret_key,
    secret_name,
    sh_quote,
)
from tests.runners.steps import step

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TOKEN = marker_token("s3cret", 42)

# /bin/sh is dash here; images differ (busybox ash on alpine, bash on some distributions).
SHELLS = [["/bin/sh"], ["bash", "--posix"]]
if shutil.which("busybox"):
    SHELLS.append([shutil.which("busybox") or "busybox", "sh"])
SHELL_IDS = [" ".join(Path(a).name for a in s) for s in SHELLS]


# ---------------------------------------------------------------- names


@pytest.mark.parametrize(
    "job",
    ["build", "test (3.11, a)", "Ünïcödé ✓", "---", "x" * 300, "A_B-c.d", ""],
)
def test_job_names_are_dns1123_and_deterministic(job: str) -> None:
    name = k8s_job_name(123456789012345, job)
    assert len(name) <= 63
    assert DNS1123.match(name), name
    assert name.startswith("ci-123456789012345-")
    assert name == k8s_job_name(123456789012345, job)
    label = job_label(job)
    assert len(label) <= 63
    assert DNS1123.match(label), label


def test_job_names_differ_when_slugs_collide() -> None:
    assert job_label("a b") == job_label("a-b")
    assert k8s_job_name(1, "a b") != k8s_job_name(1, "a-b")
    assert k8s_job_name(1, "a") != k8s_job_name(2, "a")
    assert k8s_job_name(7, "test (3.11)").startswith("ci-7-test-3-11-")


def test_secret_name_token_and_keys() -> None:
    assert DNS1123.match(secret_name(99))
    assert marker_token("s3cret", 42) == TOKEN
    assert marker_token("other", 42) != TOKEN
    assert marker_token("s3cret", 43) != TOKEN
    assert re.fullmatch(r"[0-9a-f]{32}", TOKEN)
    key = secret_key("k", "TOKEN", "hunter2")
    assert re.fullmatch(r"[-._a-zA-Z0-9]+", key)
    assert "hunter2" not in key
    assert key == secret_key("k", "TOKEN", "hunter2") != secret_key("k", "TOKEN", "x")


@pytest.mark.parametrize("text", ["plain", "it's", "'", "''\\'", '$(id) `id` ${X} "q"', "a\nb\n"])
def test_sh_quote_round_trips(text: str) -> None:
    out = subprocess.run(
        ["/bin/sh", "-c", f"printf %s {sh_quote(text)}"], capture_output=True, check=True
    )
    assert out.stdout.decode() == text


# ---------------------------------------------------------------- env plan


def test_plan_env_splits_common_and_per_step_values() -> None:
    steps = [
        step(0, "true", env={"A": "1", "B": "x", "S": "pw", "CI_WORKSPACE": "/local"}),
        step(1, "true", env={"A": "1", "B": "y", "S": "pw", "CI_WORKSPACE": "/local"}),
    ]
    plan = plan_env(steps, frozenset({"S"}))
    by_name = {e.name: e for e in plan.container}
    assert by_name["A"].value == "1"
    assert by_name["S"].secret
    assert not by_name["A"].secret
    assert by_name["CI_WORKSPACE"].value == WORKSPACE
    assert "B" not in by_name
    helpers = dict(plan.per_step[0])
    assert by_name[helpers["B"]].value == "x"
    assert by_name[dict(plan.per_step[1])["B"]].value == "y"


def test_plan_env_rejects_names_that_are_not_identifiers() -> None:
    with pytest.raises(ValueError, match="invalid environment variable name"):
        plan_env([step(0, "true", env={"A B": "1"})], frozenset())


# ---------------------------------------------------------------- the parser


def collapse(events: list[Event]) -> list[object]:
    """Merge adjacent Output events so chunking does not matter for comparisons."""
    out: list[object] = []
    for event in events:
        if isinstance(event, Output) and out and isinstance(out[-1], Output):
            prev = out.pop()
            assert isinstance(prev, Output)
            out.append(Output(prev.data + event.data, event.end))
        else:
            out.append(event)
    return out


def mk(token: str, text: str) -> bytes:
    return f"\n##[ci-executor:{token}] {text}\n".encode()


def test_parser_splits_at_markers_at_every_chunk_boundary() -> None:
    forged = mk("0" * 32, "step-end 0 success 0")
    log = (
        mk(TOKEN, "step-start 0")
        + b"hello\npartial"
        + forged
        + mk(TOKEN, "step-end 0 failed 3")
        + mk(TOKEN, "step-end 1 skipped -")
        + mk(TOKEN, "bogus words")
        + mk(TOKEN, "job-end 1")
        + b"\n##[ci-executor:"
    )
    whole = MarkerParser(TOKEN)
    expected = collapse(whole.feed(log) + whole.finish())
    assert expected[0] == StepStart(0, len(mk(TOKEN, "step-start 0")))
    assert isinstance(expected[1], Output)
    assert expected[1].data == b"hello\npartial" + forged
    assert isinstance(expected[2], StepEnd)
    assert (expected[2].index, expected[2].status, expected[2].exit_code) == (0, "failed", 3)
    assert isinstance(expected[3], StepEnd)
    assert (expected[3].status, expected[3].exit_code) == ("skipped", None)
    assert isinstance(expected[4], Output)
    assert expected[4].data == mk(TOKEN, "bogus words")
    assert isinstance(expected[5], JobEnd)
    assert expected[5].failed
    assert expected[-1] == Output(b"\n##[ci-executor:", len(log))
    for cut in range(1, len(log)):
        parser = MarkerParser(TOKEN)
        events = parser.feed(log[:cut])
        assert parser.consumed == cut
        events += parser.feed(log[cut:]) + parser.finish()
        assert collapse(events) == expected, cut


def test_parser_offsets_point_just_after_the_data() -> None:
    log = b"pre" + mk(TOKEN, "step-start 0") + b"abc" + mk(TOKEN, "step-end 0 success 0")
    parser = MarkerParser(TOKEN)
    events = parser.feed(log)
    outputs = [e for e in events if isinstance(e, Output)]
    for out in outputs:
        assert log[out.end - len(out.data) : out.end] == out.data
    assert events[-1].end == len(log)


def test_parser_gives_up_on_overlong_marker_lines() -> None:
    parser = MarkerParser(TOKEN)
    data = b"\n##[ci-executor:" + TOKEN.encode() + b"] " + b"x" * 500
    events = parser.feed(data)
    assert b"".join(e.data for e in events if isinstance(e, Output)) == data


# ---------------------------------------------------------------- running the script


def run_script(
    shell: list[str],
    workspace: Path,
    steps: list[StepRun],
    *,
    secrets: frozenset[str] = frozenset(),
    path: str | None = None,
) -> tuple[int, list[object], str]:
    plan: EnvPlan = plan_env(steps, secrets)
    script = build_script(steps, TOKEN, plan)
    env = {"PATH": path or os.environ["PATH"], "HOME": str(workspace)}
    for entry in plan.container:
        env[entry.name] = str(workspace) if entry.name == "CI_WORKSPACE" else entry.value
    proc = subprocess.run(
        [*shell, "-c", script], cwd=workspace, env=env, capture_output=True, timeout=60
    )
    assert proc.stderr == b"", proc.stderr
    parser = MarkerParser(TOKEN)
    events = collapse(parser.feed(proc.stdout) + parser.finish())
    return proc.returncode, events, script


def summary(events: list[object]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    current = -1
    for e in events:
        if isinstance(e, StepStart):
            current = e.index
            out.append(("start", e.index))
        elif isinstance(e, Output):
            out.append(("out", current, e.data.decode()))
        elif isinstance(e, StepEnd):
            out.append(("end", e.index, e.status, e.exit_code))
        elif isinstance(e, JobEnd):
            out.append(("job-end", e.failed))
    return out


@pytest.fixture(params=SHELLS, ids=SHELL_IDS)
def shell(request: pytest.FixtureRequest) -> list[str]:
    return list(request.param)


def test_steps_run_in_order_with_conditions(shell: list[str], tmp_path: Path) -> None:
    steps = [
        step(0, "echo one"),
        step(1, "printf 'no newline'; exit 3", coe=True),
        step(2, "echo two; false; echo unreachable", shell="bash"),
        step(3, "echo never"),
        step(4, "echo cleanup", cond="always()"),
        step(5, "echo on-failure", cond="failure()"),
        step(6, "echo on-success", cond="success()"),
    ]
    code, events, _ = run_script(shell, tmp_path, steps)
    assert code == 1
    assert summary(events) == [
        ("start", 0),
        ("out", 0, "one\n"),
        ("end", 0, "success", 0),
        ("start", 1),
        ("out", 1, "no newline"),
        ("end", 1, "failed", 3),
        ("start", 2),
        ("out", 2, "two\n"),
        ("end", 2, "failed", 1),
        ("end", 3, "skipped", None),
        ("start", 4),
        ("out", 4, "cleanup\n"),
        ("end", 4, "success", 0),
        ("start", 5),
        ("out", 5, "on-failure\n"),
        ("end", 5, "success", 0),
        ("end", 6, "skipped", None),
        ("job-end", True),
    ]


def test_successful_job_exits_zero_and_pipefail_applies(shell: list[str], tmp_path: Path) -> None:
    steps = [
        step(0, "false | true", shell="bash", coe=True),
        step(1, "false | true"),
        step(2, "echo err >&2"),
    ]
    code, events, _ = run_script(shell, tmp_path, steps)
    assert code == 0
    assert summary(events) == [
        ("start", 0),
        ("end", 0, "failed", 1),
        ("start", 1),
        ("end", 1, "success", 0),
        ("start", 2),
        ("out", 2, "err\n"),
        ("end", 2, "success", 0),
        ("job-end", False),
    ]


def test_env_values_reach_steps_exactly_and_stay_out_of_the_script(
    shell: list[str], tmp_path: Path
) -> None:
    nasty = 'it\'s $(touch pwned) `id` ${HOME}\n"end" \\'
    steps = [
        step(
            0, 'printf "%s|%s|%s" "$V" "$COMMON" "$CI_WORKSPACE"', env={"V": nasty, "COMMON": "c"}
        ),
        step(
            1,
            'printf "%s|%s" "$V" "$COMMON"; env | grep -c CI_STEP_ENV_ || true',
            env={"V": "2nd-value", "COMMON": "c"},
        ),
        step(2, 'printf "[%s]" "${V-unset}"', env={"COMMON": "c"}),
    ]
    code, events, script = run_script(shell, tmp_path, steps)
    assert code == 0
    outs = [e[2] for e in summary(events) if e[0] == "out"]
    assert outs == [f"{nasty}|c|{tmp_path}", "2nd-value|c0\n", "[unset]"]
    assert not (tmp_path / "pwned").exists()
    assert "2nd-value" not in script
    assert "touch pwned" not in script


def test_working_directory(shell: list[str], tmp_path: Path) -> None:
    (tmp_path / "sub dir").mkdir()
    steps = [
        step(0, "pwd", wd="sub dir"),
        step(1, "pwd", wd="missing", coe=True),
    ]
    code, events, _ = run_script(shell, tmp_path, steps)
    assert code == 0
    s = summary(events)
    assert s[1] == ("out", 0, f"{tmp_path / 'sub dir'}\n")
    assert s[4][:2] == ("out", 1)
    assert str(s[4][2]).endswith("ci-executor: cannot enter working-directory missing\n")
    assert s[5] == ("end", 1, "failed", 1)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_step_timeout_kills_the_whole_tree(shell: list[str], tmp_path: Path) -> None:
    script = (
        "sh -c 'sleep 300 & echo $! > grandchild; wait' &\n"
        "echo $! > child\n"
        "trap '' TERM\n"
        "echo started\n"
        "while :; do sleep 1; done"
    )
    steps = [step(0, script, timeout=1), step(1, "echo after", cond="always()")]
    code, events, _ = run_script(shell, tmp_path, steps)
    assert code == 1
    s = summary(events)
    assert s[:3] == [("start", 0), ("out", 0, "started\n"), ("end", 0, "timed_out", 124)]
    assert s[3:] == [
        ("start", 1),
        ("out", 1, "after\n"),
        ("end", 1, "success", 0),
        ("job-end", True),
    ]
    pids = [int((tmp_path / f).read_text()) for f in ("child", "grandchild")]
    deadline = time.monotonic() + 20
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(p) for p in pids)


def test_step_finishing_before_its_timeout_is_not_timed_out(
    shell: list[str], tmp_path: Path
) -> None:
    steps = [step(0, "echo quick", timeout=120)]
    code, events, _ = run_script(shell, tmp_path, steps)
    assert code == 0
    assert summary(events)[2] == ("end", 0, "success", 0)


@pytest.mark.skipif(not shutil.which("busybox"), reason="busybox not installed")
def test_missing_bash_is_a_clear_step_error(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    busybox = shutil.which("busybox") or ""
    for applet in ("sh", "sleep", "cat", "echo", "printf", "kill"):
        (bin_dir / applet).symlink_to(busybox)
    ws = tmp_path / "ws"
    ws.mkdir()
    steps = [step(0, "echo hi", shell="bash"), step(1, "echo sh-ok", shell="sh", cond="always()")]
    code, events, _ = run_script([busybox, "sh"], ws, steps, path=str(bin_dir))
    assert code == 1
    s = summary(events)
    assert s[1][0] == "out"
    assert "bash is not installed" in str(s[1][2])
    assert s[2] == ("end", 0, "error", 127)
    assert s[3:6] == [("start", 1), ("out", 1, "sh-ok\n"), ("end", 1, "success", 0)]


def test_k8s_escape_survives_kubernetes_expansion() -> None:
    from tests.k8s_emulator.expansion import expand, mapping_for

    text = "echo $(HOME) $$ $X ${Y} $((1+2)) $"
    assert expand(k8s_escape(text), mapping_for({"HOME": "/h", "X": "x"})) == text


def test_release_idle_emits_a_lone_held_newline_only() -> None:
    token = marker_token("s", 1)
    parser = MarkerParser(token)
    events = parser.feed(b"up\n")
    assert [e.data for e in events if isinstance(e, Output)] == [b"up"]
    released = parser.release_idle()
    assert [(e.data, e.end) for e in released if isinstance(e, Output)] == [(b"\n", 3)]
    events = parser.feed(f"\n##[ci-executor:{token}] step-end 0 success 0\n".encode())
    assert [type(e).__name__ for e in events] == ["StepEnd"]
    half = MarkerParser(token)
    half.feed(b"x\n##[ci-exec")
    assert half.release_idle() == []  # a marker being written is never released


def test_installations_sharing_a_namespace_never_share_names() -> None:
    one, two = installation_id("secret-one"), installation_id("secret-two")
    assert one != two
    assert k8s_job_name(1, "build", one) != k8s_job_name(1, "build", two)
    assert secret_name(1, one) != secret_name(1, two)
    assert DNS1123.match(k8s_job_name(1, "build", one))
    assert DNS1123.match(secret_name(123456789, one))
