"""An action's metadata file (`action.yml` / `action.yaml`) and what kind of action it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from app.actions.errors import ManifestError

NODE_VERSIONS = ("node12", "node16", "node20", "node24")
Kind = Literal["composite", "node", "docker"]
MAX_MANIFEST_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ActionInput:
    name: str
    default: str | None
    required: bool
    deprecation_message: str | None = None


@dataclass(frozen=True)
class ActionManifest:
    name: str
    kind: Kind
    using: str
    inputs: list[ActionInput]
    outputs: dict[str, Any]
    runs: dict[str, Any]
    path: Path
    # JavaScript: main/pre/post entry points and their conditions (pre-if/post-if).
    main: str | None = None
    pre: str | None = None
    post: str | None = None
    pre_if: str | None = None
    post_if: str | None = None
    steps: list[Any] = field(default_factory=list)  # composite

    @property
    def supported(self) -> bool:
        return self.kind in ("composite", "node")

    @property
    def unsupported_reason(self) -> str | None:
        if self.kind == "docker":
            return f"{self.name}: Docker actions (runs.using: docker) are not supported yet"
        return None

    def input_env(self, given: dict[str, str]) -> dict[str, str]:
        """`INPUT_<NAME>` for every declared input (given value, else its default) and every
        extra `with:` key, named as the runner names them: upper case, spaces to `_`."""
        values = {i.name: i.default for i in self.inputs if i.default is not None}
        values.update(given)
        return {f"INPUT_{k.replace(' ', '_').upper()}": v for k, v in values.items()}

    def missing_inputs(self, given: dict[str, str]) -> list[str]:
        """Required inputs without a value or default (GitHub only warns; callers decide)."""
        return [
            i.name for i in self.inputs if i.required and i.default is None and i.name not in given
        ]


def _scalar(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_manifest(directory: Path, label: str) -> ActionManifest:
    """Read and classify the action in `directory` (`label` names it in errors)."""
    for name in ("action.yml", "action.yaml"):
        path = directory / name
        if path.is_file():
            break
    else:
        raise ManifestError(f"{label}: no action.yml or action.yaml in the action's directory")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{label}: {path.name} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{label}: {path.name} is not valid UTF-8: {exc}") from None
    return parse_manifest(text, path, label)


def parse_manifest(text: str, path: Path, label: str) -> ActionManifest:
    """Classify an action.yml already read (`path` is where it lives, as the step sees it)."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{label}: {path.name} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ManifestError(f"{label}: {path.name} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{label}: {path.name} must be a mapping")
    runs = data.get("runs")
    if not isinstance(runs, dict) or not isinstance(runs.get("using"), str):
        raise ManifestError(f"{label}: {path.name} has no runs.using")
    using = runs["using"].strip().lower()
    raw_inputs = data.get("inputs") or {}
    if not isinstance(raw_inputs, dict):
        raise ManifestError(f"{label}: inputs must be a mapping")
    inputs = []
    for key, spec in raw_inputs.items():
        spec = spec if isinstance(spec, dict) else {}
        inputs.append(
            ActionInput(
                name=str(key),
                default=_scalar(spec.get("default")),
                required=bool(spec.get("required", False)),
                deprecation_message=_scalar(spec.get("deprecationMessage")),
            )
        )
    outputs = data.get("outputs") or {}
    common: dict[str, Any] = {
        "name": str(data.get("name") or label),
        "using": using,
        "inputs": inputs,
        "outputs": outputs if isinstance(outputs, dict) else {},
        "runs": runs,
        "path": path,
    }
    if using == "composite":
        steps = runs.get("steps")
        if not isinstance(steps, list):
            raise ManifestError(f"{label}: a composite action needs runs.steps (a list)")
        return ActionManifest(kind="composite", steps=steps, **common)
    if using in NODE_VERSIONS:
        main = runs.get("main")
        if not isinstance(main, str) or not main:
            raise ManifestError(f"{label}: a JavaScript action needs runs.main")
        return ActionManifest(
            kind="node",
            main=main,
            pre=_scalar(runs.get("pre")),
            post=_scalar(runs.get("post")),
            pre_if=_scalar(runs.get("pre-if")),
            post_if=_scalar(runs.get("post-if")),
            **common,
        )
    if using == "docker":
        return ActionManifest(kind="docker", **common)
    raise ManifestError(
        f"{label}: runs.using {using!r} is not one of composite, {', '.join(NODE_VERSIONS)}, docker"
    )
