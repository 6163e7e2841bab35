"""Start and drive the emulator from tests (sync API, usable from any fixture)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0


@dataclass
class EmulatorProcess:
    url: str
    kubeconfig_path: Path
    state_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    _log: IO[bytes] = field(repr=False)

    @classmethod
    def start(cls, state_dir: Path) -> EmulatorProcess:
        state_dir.mkdir(parents=True, exist_ok=True)
        log = open(state_dir / "emulator.log", "ab")  # noqa: SIM115 - kept open for the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.k8s_emulator",
                "--port",
                "0",
                "--state-dir",
                str(state_dir),
                "--exit-on-stdin-eof",
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            # Own session: a Ctrl-C or a test killing its executor's group does not reach it.
            start_new_session=True,
        )
        assert process.stdout is not None
        line = b""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or process.poll() is not None:
                    break
                if selector.select(remaining):
                    byte = os.read(process.stdout.fileno(), 1)
                    if not byte:
                        break
                    line += byte
        process.stdout.close()
        text = line.decode().strip()
        if not text.startswith("LISTENING "):
            process.kill()
            process.wait()
            if process.stdin is not None:
                process.stdin.close()
            log.close()
            tail = (state_dir / "emulator.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"k8s emulator did not start (got {text!r}):\n{tail}")
        return cls(
            url=text.split(" ", 1)[1],
            kubeconfig_path=state_dir / "kubeconfig.yaml",
            state_dir=state_dir,
            process=process,
            _log=log,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdin is not None:
            self.process.stdin.close()
        self._log.close()

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET /_emulator/<path> without a body, POST with one."""
        path = path.removeprefix("/").removeprefix("_emulator/")
        url = f"{self.url}/_emulator/{path}"
        with httpx.Client(timeout=10) as client:
            response = client.get(url) if body is None else client.post(url, json=body)
        response.raise_for_status()
        return response.json()
