"""The requests and replies of the step invocation protocol (app/workflow/session.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.workflow.runtime import RuntimeFiles


@dataclass(frozen=True)
class Invocation:
    """One process of a step (app/workflow/session.py says what the runner does with it)."""

    label: str  # a header line for the log ("" for a plain `run:` step)
    argv: tuple[str, ...]
    script: str
    script_name: str  # "" when there is no script to write (JavaScript actions)
    env: dict[str, str]
    working_directory: str | None
    timeout_seconds: float | None
    files: dict[str, str]  # GITHUB_OUTPUT, _ENV, _PATH, _STEP_SUMMARY, _STATE -> path
    readable: tuple[str, ...] = ()  # host directories the process reads (action trees)
    missing: str = ""  # the step's error when argv[0] is not installed


@dataclass(frozen=True)
class Log:
    text: str


@dataclass(frozen=True)
class ReadFile:
    path: str  # absolute, as the step sees it


@dataclass(frozen=True)
class FetchAction:
    uses: str


Request = Invocation | Log | ReadFile | FetchAction


@dataclass(frozen=True)
class Ran:
    """The runner's reply to an Invocation."""

    status: str
    exit_code: int | None
    files: RuntimeFiles = field(default_factory=RuntimeFiles)
    message: str | None = None  # an infrastructure reason (status "error")


@dataclass(frozen=True)
class StepEnd:
    status: str
    exit_code: int | None = None
    continue_on_error: bool = False
    message: str | None = None


def github_like(url: str) -> bool:
    """What @actions/artifact and @actions/cache accept as GitHub (not GHES)."""
    host = (urlsplit(url).hostname or "").lower()
    return host == "github.com" or host.endswith((".ghe.com", ".localhost"))
