"""Static checks of the container image definition (no Docker engine is available to build it).

What can be checked without an engine is checked for real: the Dockerfile's stages and
instructions, which files the build context (after .dockerignore) holds, and that the Python
package builds from that context alone into a wheel with the `ci-executor` entry point.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.deploy.dockerfile_parse import DockerIgnore, Stage, parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PORT = 10056
DEV_TOOLS = ("pytest", "mypy", "ruff", "types-", "pyyaml")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    return DockerIgnore(DOCKERIGNORE.read_text())


def _stage(stages: list[Stage], name: str) -> Stage:
    for stage in stages:
        if stage.name == name:
            return stage
    raise AssertionError(f"no stage named {name!r}: {[s.name for s in stages]}")


def _copy_sources(stage: Stage) -> list[tuple[str | None, list[str], str]]:
    """(from-stage or None for the context, sources, destination) of each COPY."""
    copies = []
    for instruction in stage.all("COPY"):
        words = instruction.exec_form() or instruction.words()
        copies.append((instruction.flags().get("from"), words[:-1], words[-1]))
    return copies


def test_multi_stage_with_slim_python_runtime(stages: list[Stage], final: Stage) -> None:
    assert [s.name for s in stages] == ["web", "builder", "runtime"]
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", final.base), final.base
    # The venv is copied between stages, so both must have the same interpreter at the same path.
    assert _stage(stages, "builder").base == final.base
    assert re.fullmatch(r"node:20-slim@sha256:[0-9a-f]{64}", _stage(stages, "web").base)


def test_runs_as_a_created_non_root_user(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "the runtime stage sets no USER, so it runs as root"
    uid, _, gid = user.args.partition(":")
    assert uid == "10001"
    assert gid in ("", "10001")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert uid.isdigit()
    assert int(uid) != 0
    created = " ".join(run.args for run in final.all("RUN"))
    assert re.search(r"useradd\b.*--uid 10001\b", created), "uid 10001 is never created"
    # Nothing after USER may switch back to root.
    after_user = final.instructions[final.instructions.index(user) :]
    assert not [i for i in after_user if i.keyword == "RUN"], "RUN after USER runs as the user"


def test_entrypoint_serves_and_never_migrates(final: Stage) -> None:
    entrypoint = final.last("ENTRYPOINT")
    cmd = final.last("CMD")
    assert entrypoint is not None
    assert cmd is not None
    # Exec form so the process is PID 1 and receives SIGTERM for the graceful shutdown.
    assert entrypoint.exec_form() == ["ci-executor"]
    assert cmd.exec_form() == ["serve"]
    everything = " ".join(i.args for i in final.instructions)
    assert "migrate" not in everything, "migrations belong to the Helm hook, not to each start"


def test_entrypoint_is_the_packages_console_script() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "ci-executor" in project["project"]["scripts"]


def test_listens_on_all_interfaces_on_the_service_port(final: Stage) -> None:
    exposed = [word for expose in final.all("EXPOSE") for word in expose.words()]
    assert exposed == [str(PORT)]
    env = final.env()
    assert env["PORT"] == str(PORT)
    # The app's default HOST is 127.0.0.1, unreachable from outside the container.
    assert env["HOST"] == "0.0.0.0"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_healthcheck_probes_healthz_on_port(final: Stage) -> None:
    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck is not None
    assert "/healthz" in healthcheck.args
    assert "PORT" in healthcheck.args


def test_only_runtime_dependencies_are_installed(stages: list[Stage]) -> None:
    installs = [
        run.args for stage in stages for run in stage.all("RUN") if "pip install" in run.args
    ]
    assert installs, "no pip install found"
    for command in installs:
        assert "[" not in command, f"an extra is installed: {command}"
        for tool in DEV_TOOLS:
            assert tool not in command, f"dev tool {tool} installed: {command}"
    builder = _stage(stages, "builder")
    assert [c for c in _copy_sources(builder) if c[0] is None] == [
        (None, ["pyproject.toml", "constraints.txt"], "./"),
        (None, ["app/"], "./app/"),
    ]


def test_dependencies_are_pinned_and_installed_before_the_app(stages: list[Stage]) -> None:
    builder = _stage(stages, "builder")
    runs = [run.args for run in builder.all("RUN")]
    (deps,) = [r for r in runs if "--constraint constraints.txt" in r]
    (app,) = [r for r in runs if "--no-deps ." in r]
    assert runs.index(deps) < runs.index(app)
    pins = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert pins
    assert all(re.fullmatch(r"[a-z0-9-]+==[\w.]+", line) for line in pins), pins
    names = {line.split("==")[0] for line in pins}
    for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower())
        assert name in names, f"{name} has no pinned version in constraints.txt"


def test_runtime_stage_copies_only_what_runs(stages: list[Stage], final: Stage) -> None:
    copies = _copy_sources(final)
    from_context = sorted(src for origin, sources, _ in copies if origin is None for src in sources)
    assert from_context == ["alembic.ini", "migrations/"]
    from_stages = {(origin, tuple(sources)) for origin, sources, _ in copies if origin}
    assert from_stages == {("builder", ("/opt/venv",)), ("web", ("/web/dist",))}
    # The built UI only: the web stage builds in /web and vite writes to dist/.
    web = _stage(stages, "web")
    workdir = web.last("WORKDIR")
    assert workdir is not None
    assert workdir.args == "/web"
    runs = [run.args for run in web.all("RUN")]
    assert runs == ["npm ci --no-audit --no-fund", "npm run build"]
    vite_config = ROOT / "web" / "vite.config.ts"
    if vite_config.exists():
        assert "outDir: 'dist'" in vite_config.read_text()
    # migrate reads alembic.ini from the working directory the copies land in.
    final_workdir = final.last("WORKDIR")
    assert final_workdir is not None
    assert final_workdir.args == "/app"


def test_every_context_copy_exists_and_is_in_the_context(
    stages: list[Stage], ignore: DockerIgnore
) -> None:
    for stage in stages:
        for origin, sources, _ in _copy_sources(stage):
            if origin is not None:
                continue
            for source in sources:
                path = ROOT / source
                assert path.exists(), f"COPY {source} ({stage.name}): missing from the repository"
                rel = source.rstrip("/")
                assert not ignore.excluded(rel), f"COPY {source}: excluded by .dockerignore"


def test_build_context_leaves_out_tests_secrets_and_host_state(ignore: DockerIgnore) -> None:
    for path in (
        "tests/deploy/test_dockerfile.py",
        ".env",
        ".git/config",
        ".venv/bin/python",
        "ci-executor.db",
        "workspaces/1/build/x",
        "web/node_modules/vue/package.json",
        "web/dist/index.html",
        "app/__pycache__/config.cpython-311.pyc",
        "charts/ci-executor/values.yaml",
    ):
        assert ignore.excluded(path), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "app/config.py", "migrations/env.py", "web/src/main.ts"):
        assert not ignore.excluded(path), f"{path} is needed by the build"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = DockerIgnore("*\n!keep/\nkeep/**/*.log\n!keep/important.log\n")
    assert rules.excluded("other/file")
    assert not rules.excluded("keep/a.txt")
    assert rules.excluded("keep/deep/x.log")
    assert rules.excluded("keep/x.log")  # `**/` also matches no folder at all
    assert not rules.excluded("keep/important.log")


@pytest.fixture(scope="module")
def context_wheel(ignore: DockerIgnore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel that the builder stage's `pip install .` builds from the build context.

    Built with build isolation, like the image: pip fetches the pyproject's build backend.
    """
    tmp = tmp_path_factory.mktemp("image")
    context = tmp / "context"
    for rel in ignore.context_files(ROOT):
        if rel.startswith("web/"):
            continue  # the web stage's business; it is not part of the Python package
        target = context / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    assert not (context / "tests").exists()
    wheels = tmp / "wheels"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(wheels),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = wheels.glob("*.whl")
    return wheel


def test_package_builds_from_the_docker_context_alone(context_wheel: Path) -> None:
    with zipfile.ZipFile(context_wheel) as archive:
        names = archive.namelist()
        (entry_points,) = (n for n in names if n.endswith(".dist-info/entry_points.txt"))
        (metadata,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        scripts = archive.read(entry_points).decode()
        requires = [
            line
            for line in archive.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    assert "app/__init__.py" in names
    assert "app/config.py" in names
    assert not [n for n in names if n.startswith("tests/")]
    assert re.search(r"^ci-executor = app\.cli:main$", scripts, re.MULTILINE)
    # Dev tools are only ever behind the `dev` extra, which the image does not install.
    for line in requires:
        if any(tool in line.lower() for tool in DEV_TOOLS):
            assert 'extra == "dev"' in line, line


def test_migrate_works_from_the_image_layout(context_wheel: Path, tmp_path: Path) -> None:
    """`ci-executor migrate` as the Helm hook runs it: the package installed (not the source
    tree), with alembic.ini and migrations/ in the working directory where the image puts them."""
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(context_wheel) as archive:
        archive.extractall(site)  # a pure-Python wheel installs by unpacking
    workdir = tmp_path / "app"
    workdir.mkdir()
    shutil.copy2(ROOT / "alembic.ini", workdir / "alembic.ini")
    shutil.copytree(ROOT / "migrations", workdir / "migrations")
    database = tmp_path / "image.db"
    script = (
        "import sys, app\n"
        f"assert app.__file__.startswith({str(site)!r}), app.__file__\n"
        "from app.cli import main\n"
        "sys.argv = ['ci-executor', 'migrate']\n"
        "code = main()\n"
        # The venv's editable install must not fill in modules the wheel lacks.
        "stray = [m.__file__ for n, m in sys.modules.items()\n"
        f"         if n.startswith('app.') and not m.__file__.startswith({str(site)!r})]\n"
        "assert not stray, stray\n"
        "sys.exit(code)\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(site),
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        "migrate fails when app is installed as a package (as in the image): it must find "
        f"alembic.ini and migrations/ in the working directory.\n{result.stderr[-3000:]}"
    )
    assert database.exists()
