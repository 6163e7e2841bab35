"""The corpus manifest (`manifest.yaml`): which workflow files we hold and what they must give."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

CORPUS_DIR = Path(__file__).parent
PARSE_OUTCOMES = ("ok", "uses-refused")
RUN_OUTCOMES = ("success", "failure")


@dataclass(frozen=True)
class Entry:
    file: str
    source: str
    parse: str
    run: str | None = None
    jobs: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    missing: str | None = None
    why_not_run: str | None = None

    @property
    def path(self) -> Path:
        return CORPUS_DIR / self.file

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")


def load() -> list[Entry]:
    data: dict[str, Any] = YAML(typ="safe").load(CORPUS_DIR / "manifest.yaml")
    entries = []
    for raw in data["entries"]:
        entry = Entry(
            file=raw["file"],
            source=raw["source"],
            parse=raw["parse"],
            run=raw.get("run"),
            jobs=dict(raw.get("jobs") or {}),
            args=tuple(raw.get("args") or ()),
            missing=raw.get("missing"),
            why_not_run=raw.get("why_not_run"),
        )
        if entry.parse not in PARSE_OUTCOMES:
            raise ValueError(f"{entry.file}: parse must be one of {PARSE_OUTCOMES}")
        if entry.run is not None and entry.run not in RUN_OUTCOMES:
            raise ValueError(f"{entry.file}: run must be one of {RUN_OUTCOMES}")
        if entry.run is None and entry.parse == "ok" and not entry.why_not_run:
            raise ValueError(f"{entry.file}: say why it is not run (why_not_run)")
        entries.append(entry)
    return entries


def workflow_files() -> set[str]:
    return {
        str(p.relative_to(CORPUS_DIR))
        for p in CORPUS_DIR.rglob("*")
        if p.suffix in (".yml", ".yaml") and p.name != "manifest.yaml"
    }
