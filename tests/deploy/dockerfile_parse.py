"""Static readers for the Dockerfile and .dockerignore (no Docker engine runs on these machines).

`parse_dockerfile` splits instructions the way the Dockerfile frontend does (line continuations,
comment lines, `FROM ... AS name` stages). `DockerIgnore` reproduces moby's patternmatcher: a path
is excluded by the last pattern that matches it or one of its parent folders, `!` re-includes,
`*` stays within one path segment and `**` crosses segments.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the line, continuations joined
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form's argv, or None for the shell form."""
        try:
            value: Any = json.loads(self.args)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None

    def flags(self) -> dict[str, str]:
        """`--from=web --chown=x` style flags at the start of the arguments."""
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args.split(" [", 1)[0]))

    def words(self) -> list[str]:
        """Arguments without the leading flags, split like a shell would."""
        return [word for word in shlex.split(self.args) if not word.startswith("--")]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                if sep:
                    values[key] = value
        return values


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start)
        if instruction.keyword == "FROM":
            words = instruction.words()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"line {start}: {instruction.keyword} before FROM")
        else:
            stages[-1].instructions.append(instruction)
    if pending:
        raise ValueError("Dockerfile ends inside a line continuation")
    return stages


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = "^"
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + "$")


class DockerIgnore:
    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[bool, re.Pattern[str], str]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            cleaned = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.patterns.append((negate, _pattern_regex(cleaned), cleaned))

    def excluded(self, path: str) -> bool:
        parts = path.split("/")
        parents = ["/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
        matched = False
        for negate, regex, _ in self.patterns:
            if negate != matched:
                continue
            if regex.match(path) or any(regex.match(parent) for parent in parents):
                matched = not negate
        return matched

    def _may_reinclude_under(self, folder: str) -> bool:
        return any(
            negate and (raw == folder or raw.startswith(folder + "/") or "*" in raw)
            for negate, _, raw in self.patterns
        )

    def context_files(self, root: Path) -> Iterator[str]:
        """Files that `docker build` would send from root, as slash-separated relative paths."""
        for folder, dirs, files in os.walk(root):
            rel_folder = Path(folder).relative_to(root).as_posix()
            prefix = "" if rel_folder == "." else rel_folder + "/"
            dirs[:] = sorted(
                d
                for d in dirs
                if not self.excluded(prefix + d) or self._may_reinclude_under(prefix + d)
            )
            for name in sorted(files):
                if not self.excluded(prefix + name):
                    yield prefix + name
