"""Schemathesis against a real `ci-executor serve` on both databases (issue 10, "Also build"):
every check on, zero server errors, zero schema violations. Bounded here (FUZZ_EXAMPLES per
operation, default 200); `make fuzz` runs many more."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.serve import ServeProcess
from tests.support import stub_http_server

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


class _NoPipelines(BaseHTTPRequestHandler):
    """pipeline_service stand-in that knows no pipeline (so creates without YAML get 404)."""

    def do_GET(self) -> None:
        body = b'{"detail": "not found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:  # quiet
        return


@pytest.fixture
def pipeline_stub() -> Iterator[str]:
    with stub_http_server(_NoPipelines) as url:
        yield url


@pytest.mark.timeout(1800)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    serve_factory: Callable[..., ServeProcess],
    database_url: str,
    pipeline_stub: str,
    tmp_path: Path,
) -> None:
    server = serve_factory(
        {
            "DATABASE_URL": database_url,
            "PIPELINE_SERVICE_URL": pipeline_stub,
            "WORKSPACE_ROOT": str(tmp_path / "ws"),
            "LOG_LEVEL": "WARNING",
        }
    )
    examples = os.environ.get("FUZZ_EXAMPLES", "200")
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            examples,
            "--seed",
            os.environ.get("FUZZ_SEED", "20261202"),
            "--max-failures",
            "20",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        output[-20000:] + "\n--- service log ---\n" + server.log()[-5000:]
    )
    assert "Tested:" in output
