"""GitHub Actions conformance on the local runner: GitHub's documented examples per feature, each
asserting what a user observes (outputs, env, skipped jobs, summaries, annotations, logs)."""

from __future__ import annotations

import httpx

from tests.helpers import create, job, log_text, wait_for_build, workflow
from tests.helpers import run_workflow as run


async def test_step_outputs_and_steps_context(client: httpx.AsyncClient) -> None:
    # docs: "Setting an output parameter" and "steps context"
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - id: color
                run: |
                  echo "SELECTED_COLOR=green" >> "$GITHUB_OUTPUT"
                  {
                    echo 'JSON<<EOF'
                    echo '{"a": 1,'
                    echo ' "b": 2}'
                    echo EOF
                  } >> "$GITHUB_OUTPUT"
              - name: Get color
                if: steps.color.outputs.SELECTED_COLOR == 'green'
                run: |
                  echo "The selected color is ${{ steps.color.outputs.SELECTED_COLOR }}"
                  echo "b is ${{ fromJSON(steps.color.outputs.JSON).b }}"
                  echo "outcome ${{ steps.color.outcome }}"
              - if: steps.color.outputs.SELECTED_COLOR == 'red'
                run: echo never
        """,
    )
    assert done["status"] == "success"
    build = job(done, "build")
    assert [s["status"] for s in build["steps"]] == ["success", "success", "skipped"]
    assert build["steps"][0]["outputs"] == {
        "SELECTED_COLOR": "green",
        "JSON": '{"a": 1,\n "b": 2}',
    }
    text = await log_text(client, done["id"])
    assert "The selected color is green" in text
    assert "b is 2" in text
    assert "outcome success" in text


async def test_env_and_path_files(client: httpx.AsyncClient) -> None:
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: |
                  echo "ACTION_STATE=yellow" >> "$GITHUB_ENV"
                  mkdir -p "$RUNNER_TEMP/bin"
                  printf '#!/bin/sh\\necho from-path-tool\\n' > "$RUNNER_TEMP/bin/mytool"
                  chmod +x "$RUNNER_TEMP/bin/mytool"
                  echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
              - run: |
                  echo "state=$ACTION_STATE expr=${{ env.ACTION_STATE }}"
                  mytool
        """,
    )
    assert done["status"] == "success", done
    text = await log_text(client, done["id"])
    assert "state=yellow expr=yellow" in text
    assert "from-path-tool" in text


async def test_job_outputs_and_needs_context(client: httpx.AsyncClient) -> None:
    # docs: "Defining outputs for jobs"
    done = await run(
        client,
        """
        jobs:
          job1:
            outputs:
              output1: ${{ steps.step1.outputs.test }}
              output2: ${{ steps.step2.outputs.test }}
            steps:
              - id: step1
                run: echo "test=hello" >> "$GITHUB_OUTPUT"
              - id: step2
                run: echo "test=world" >> "$GITHUB_OUTPUT"
          job2:
            needs: job1
            steps:
              - env:
                  OUTPUT1: ${{ needs.job1.outputs.output1 }}
                  OUTPUT2: ${{ needs.job1.outputs.output2 }}
                run: echo "$OUTPUT1 $OUTPUT2 ${{ needs.job1.result }}"
        """,
    )
    assert done["status"] == "success"
    assert job(done, "job1")["outputs"] == {"output1": "hello", "output2": "world"}
    assert "hello world success" in await log_text(client, done["id"])


async def test_skips_are_transitive_unless_a_status_function_is_used(
    client: httpx.AsyncClient,
) -> None:
    done = await run(
        client,
        """
        jobs:
          a:
            steps: [{run: exit 1}]
          b:
            needs: a
            if: always()
            steps: [{run: echo b}]
          c:
            needs: b
            steps: [{run: echo c}]
          d:
            needs: b
            if: failure()
            steps: [{run: echo d}]
        """,
    )
    statuses = {j["name"]: j["status"] for j in done["jobs"]}
    # c's direct need succeeded, but an ancestor failed: GitHub skips it.
    assert statuses == {"a": "failed", "b": "success", "c": "skipped", "d": "success"}


async def test_summary_annotations_masks_and_commands(client: httpx.AsyncClient) -> None:
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - id: s
                run: |
                  echo "### Hello world! :rocket:" >> "$GITHUB_STEP_SUMMARY"
                  echo "::error file=app.js,line=1,col=5,endColumn=7,title=Oops::Missing semicolon"
                  echo "::warning::careful%0Anow"
                  echo "::add-mask::hunter2-secret"
                  echo "the value is hunter2-secret"
                  echo "::set-output name=legacy::old-style"
                  echo "::stop-commands::pause-token"
                  echo "::error::not an annotation"
                  echo "::pause-token::"
                  echo "::set-env name=X::y"
              - run: echo "legacy=${{ steps.s.outputs.legacy }}"
        """,
    )
    assert done["status"] == "success", done
    step = job(done, "build")["steps"][0]
    assert step["summary"] == "### Hello world! :rocket:\n"
    annotations = [
        (a["level"], a["message"], a["file"], a["line"], a["col"], a["end_column"], a["title"])
        for a in done["annotations"]
    ]
    assert annotations[:2] == [
        ("error", "Missing semicolon", "app.js", 1, 5, 7, "Oops"),
        ("warning", "careful\nnow", None, None, None, None, None),
    ]
    assert annotations[2][0] == "error" and "`set-env` command is disabled" in annotations[2][1]
    assert len(annotations) == 3  # the one inside stop-commands is not processed
    text = await log_text(client, done["id"])
    assert "hunter2-secret" not in text
    assert "the value is ***" in text
    assert "::add-mask::" not in text
    assert "::error::not an annotation" in text
    assert "legacy=old-style" in text


async def test_default_environment_and_contexts(client: httpx.AsyncClient) -> None:
    done = await run(
        client,
        """
        name: CI
        env:
          WF: wf
        jobs:
          build:
            env:
              JOB: ${{ env.WF }}-job
            steps:
              - env:
                  STEP: step
                run: |
                  echo "ci=$CI gha=$GITHUB_ACTIONS job=$GITHUB_JOB event=$GITHUB_EVENT_NAME"
                  echo "actor=$GITHUB_ACTOR run=$GITHUB_RUN_ID os=$RUNNER_OS arch=$RUNNER_ARCH"
                  echo "ws=$([ "$GITHUB_WORKSPACE" = "$PWD" ] && echo same)"
                  echo "temp=$([ -d "$RUNNER_TEMP" ] && echo dir)"
                  echo "event=$(cat "$GITHUB_EVENT_PATH")"
                  echo "layers=$WF/$JOB/$STEP"
                  echo "inputs=${{ inputs.level }} ${{ github.event.inputs.level }}"
                  echo "ctx=${{ github.event_name }} ${{ github.workflow }} ${{ runner.os }}"
        """,
        event_name="workflow_dispatch",
        event={"inputs": {"level": "3"}},
    )
    assert done["status"] == "success", done
    text = await log_text(client, done["id"])
    assert "ci=true gha=true job=build event=workflow_dispatch" in text
    assert f"actor=tester run={done['id']} os=Linux arch=X64" in text
    assert "ws=same" in text
    assert "temp=dir" in text
    assert 'event={"inputs": {"level": "3"}}' in text
    assert "layers=wf/wf-job/step" in text
    assert "inputs=3 3" in text
    assert "ctx=workflow_dispatch CI Linux" in text


async def test_defaults_run_and_shells(client: httpx.AsyncClient) -> None:
    done = await run(
        client,
        """
        defaults:
          run:
            shell: sh
        jobs:
          build:
            defaults:
              run:
                working-directory: sub
            steps:
              - run: echo "in $(basename "$PWD")"
                working-directory: .
              - run: mkdir -p sub
                working-directory: .
              - run: echo "now in $(basename "$PWD") ${0##*.}"
              - shell: python
                run: |
                  import sys
                  print("python", sys.version_info[0])
              - shell: perl {0}
                run: print "perl says hi\\n";
              - shell: bash
                run: echo "bash $BASH_VERSION" | cut -c1-6
        """,
    )
    text = await log_text(client, done["id"])
    assert done["status"] == "success", text
    assert "now in sub sh" in text
    assert "python 3" in text
    assert "perl says hi" in text
    assert "bash 5" in text or "bash 4" in text


async def test_expression_error_fails_the_step_with_a_message(client: httpx.AsyncClient) -> None:
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: echo ${{ fromJSON('not json') }}
              - if: failure()
                run: echo "handled"
        """,
    )
    build = job(done, "build")
    assert [s["status"] for s in build["steps"]] == ["failed", "success"]
    text = await log_text(client, done["id"])
    assert "Error evaluating the step's expressions" in text


async def test_continue_on_error_and_timeout_as_expressions(client: httpx.AsyncClient) -> None:
    done = await run(
        client,
        """
        jobs:
          build:
            strategy:
              matrix:
                experimental: [true]
            steps:
              - continue-on-error: ${{ matrix.experimental }}
                id: flaky
                run: exit 3
              - run: >-
                  echo "outcome=${{ steps.flaky.outcome }}
                  conclusion=${{ steps.flaky.conclusion }}"
              - timeout-minutes: ${{ 1 }}
                run: echo quick
        """,
    )
    assert done["status"] == "success", done
    assert "outcome=failure conclusion=success" in await log_text(client, done["id"])


async def test_checkout_at_its_position(client: httpx.AsyncClient, tmp_path: object) -> None:
    import subprocess
    from pathlib import Path

    repo = Path(str(tmp_path)) / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "hello.txt").write_text("hi from repo\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    done = await run(
        client,
        """
        jobs:
          build:
            steps:
              - run: echo "before $(ls | wc -l)"
              - uses: actions/checkout@v4
                with:
                  path: code
                  fetch-depth: 0
              - run: cat code/hello.txt
        """,
        repo_url=f"file://{repo}",
        branch="main",
    )
    assert done["status"] == "success", done
    names = [s["name"] for s in job(done, "build")["steps"]]
    assert names == [
        'Run echo "before $(ls | wc -l)"',
        "Run actions/checkout@v4",
        "Run cat code/hello.txt",
    ]
    text = await log_text(client, done["id"])
    assert "before 0" in text
    assert "hi from repo" in text


async def test_container_jobs_default_to_sh_and_get_container_env(
    client: httpx.AsyncClient,
) -> None:
    # GitHub: `sh` is the default shell inside a container; `container.env` reaches the steps.
    done = await run(
        client,
        """
        jobs:
          c:
            container:
              image: alpine:3
              env: {FROM_CONTAINER: yes-it-is}
            steps:
              - run: |
                  [ -z "${BASH+x}" ] && echo "plain sh"
                  echo "env $FROM_CONTAINER"
        """,
    )
    assert done["status"] == "success", done
    text = await log_text(client, done["id"])
    assert "plain sh" in text
    assert "env yes-it-is" in text


async def test_unsecure_commands_when_allowed_and_missing_shell(
    client: httpx.AsyncClient,
) -> None:
    done = await run(
        client,
        """
        jobs:
          allowed:
            env: {ACTIONS_ALLOW_UNSECURE_COMMANDS: "true"}
            steps:
              - run: echo "::set-env name=FOO::bar"
              - run: echo "foo=$FOO"
          missing-shell:
            steps:
              - shell: no-such-shell-here {0}
                run: echo hi
        """,
    )
    text = await log_text(client, done["id"])
    assert "foo=bar" in text
    assert job(done, "allowed")["status"] == "success"
    assert job(done, "missing-shell")["status"] == "failed"
    assert "the shell 'no-such-shell-here' is not installed on this runner" in text


async def test_matrix_from_needs_outputs_is_expanded_when_the_need_finishes(
    client: httpx.AsyncClient,
) -> None:
    # docs: "Example: Using an output to define two matrices" (fromJSON of a job output)
    created = await create(
        client,
        workflow(
            """
            jobs:
              define-matrix:
                outputs:
                  colors: ${{ steps.colors.outputs.colors }}
                steps:
                  - id: colors
                    run: echo 'colors=["red", "green"]' >> "$GITHUB_OUTPUT"
              produce:
                needs: define-matrix
                name: paint ${{ matrix.color }}
                strategy:
                  matrix:
                    color: ${{ fromJSON(needs.define-matrix.outputs.colors) }}
                steps:
                  - run: echo "painting ${{ matrix.color }}"
              after:
                needs: produce
                steps: [{run: echo done}]
            """
        ),
    )
    # before the need finishes: one placeholder row named by the job id
    assert [j["name"] for j in created["jobs"]] == ["define-matrix", "produce", "after"]
    done = await wait_for_build(client, created["id"])
    assert done["status"] == "success", done
    jobs = {j["name"]: j for j in done["jobs"]}
    assert set(jobs) == {"define-matrix", "produce (red)", "produce (green)", "after"}
    assert jobs["produce (red)"]["display_name"] == "paint red"
    assert sorted(jobs["after"]["needs"]) == ["produce (green)", "produce (red)"]
    assert jobs["produce (green)"]["needs"] == ["define-matrix"]
    text = await log_text(client, done["id"])
    assert "painting red" in text
    assert "painting green" in text


async def test_matrix_computed_badly_fails_the_job(client: httpx.AsyncClient) -> None:
    done = await run(
        client,
        """
        jobs:
          m:
            strategy:
              matrix: ${{ fromJSON('"not a mapping"') }}
            steps: [{run: echo never}]
        """,
    )
    m = job(done, "m")
    assert m["status"] == "failed"
    assert "the matrix of job 'm' must be a mapping" in m["error"]


async def test_workflow_dispatch_inputs_defaults_and_booleans(client: httpx.AsyncClient) -> None:
    # act's testdata/workflow_dispatch, with its event.json as the build's event
    done = await run(
        client,
        """
        on:
          workflow_dispatch:
            inputs:
              required: {required: true}
              with_default: {required: false, default: default}
              boolean: {required: false, type: boolean}
        jobs:
          test:
            steps:
              - run: '[[ "${{ inputs.required }}" = "required input" ]]'
              - run: '[[ "${{ inputs.with_default }}" = "default" ]]'
              - id: boolean-test
                if: ${{ inputs.boolean == true }}
                run: echo "::set-output name=value::executed"
              - run: '[[ "${{ steps.boolean-test.outputs.value }}" = "executed" ]]'
        """,
        event_name="workflow_dispatch",
        event={"inputs": {"required": "required input", "boolean": "true"}},
    )
    assert done["status"] == "success", done
