"""Job keys about where and how a job runs: `runs-on`, `environment`, `concurrency`, `defaults`,
`container`, `services` and our `kubernetes:` extension.

GitHub's hosted-platform keys get the meaning docs/workflow-syntax.md gives them here: `runs-on`
labels are recorded (the kubernetes runner maps them to images), `environment` is shown,
`container:` chooses the job's image like `image:`, `services:` become sidecar containers on the
kubernetes runner.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ruamel.yaml.comments import CommentedMap

from app.workflow.checks import (
    CONCURRENCY_KEYS,
    CONTAINER_KEYS,
    DEFAULTS_KEYS,
    ENVIRONMENT_KEYS,
    KUBERNETES_KEYS,
    RUN_DEFAULTS_KEYS,
    Checker,
    Text,
)
from app.workflow.loader import describe, key_pos, plain, scalar_text, value_pos
from app.workflow.spec import Concurrency, Environment, RunDefaults

if TYPE_CHECKING:
    from app.runners.base import KubernetesOptions, ServiceContainer

SERVICE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
KNOWN_SHELLS = ("bash", "sh", "python", "pwsh", "powershell")


def shell(checker: Checker, mapping: CommentedMap, where: str) -> str | None:
    """`shell:` is a known shell or a custom command template containing `{0}`."""
    if "shell" not in mapping:
        return None
    value = mapping["shell"]
    if isinstance(value, str) and (value in KNOWN_SHELLS or "{0}" in value or "${{" in value):
        return str(value)
    checker.add(
        value_pos(mapping, "shell"),
        f"`shell` of {where} must be one of {', '.join(KNOWN_SHELLS)} or a command template "
        f"containing {{0}} (e.g. 'perl {{0}}'), not {describe(value)}",
    )
    return None


def defaults(checker: Checker, mapping: CommentedMap, where: str) -> RunDefaults:
    block = checker.mapping(mapping, "defaults", where, "a mapping with `run`")
    if block is None:
        return RunDefaults()
    checker.unknown_keys(block, DEFAULTS_KEYS, f"`defaults` of {where}")
    run = checker.mapping(block, "run", f"`defaults` of {where}", "a mapping")
    if run is None:
        return RunDefaults()
    run_where = f"`defaults.run` of {where}"
    checker.unknown_keys(run, RUN_DEFAULTS_KEYS, run_where)
    directory = checker.optional_str(run, "working-directory", run_where)
    return RunDefaults(
        shell=shell(checker, run, run_where),
        working_directory=directory.value if directory else None,
    )


def concurrency(checker: Checker, mapping: CommentedMap, where: str) -> Concurrency | None:
    if "concurrency" not in mapping:
        return None
    value = mapping["concurrency"]
    if isinstance(value, str) and value.strip():
        return Concurrency(group=str(value))
    block = checker.mapping(mapping, "concurrency", where, "a group name or a mapping")
    if block is None:
        return None
    block_where = f"`concurrency` of {where}"
    checker.unknown_keys(block, CONCURRENCY_KEYS, block_where)
    group = checker.optional_str(block, "group", block_where)
    if group is None:
        if "group" not in block:
            checker.add(value_pos(mapping, "concurrency"), f"{block_where} has no `group`")
        return None
    cancel = checker.bool_or_expression(block, "cancel-in-progress", block_where, default=False)
    return Concurrency(group.value, cancel.value if isinstance(cancel, Text) else cancel)


def environment(checker: Checker, mapping: CommentedMap, where: str) -> Environment | None:
    if "environment" not in mapping:
        return None
    value = mapping["environment"]
    if isinstance(value, str) and value.strip():
        return Environment(str(value))
    block = checker.mapping(mapping, "environment", where, "a name or a mapping with `name`")
    if block is None:
        return None
    block_where = f"`environment` of {where}"
    checker.unknown_keys(block, ENVIRONMENT_KEYS, block_where)
    name = checker.optional_str(block, "name", block_where)
    url = checker.optional_str(block, "url", block_where)
    if name is None:
        if "name" not in block:
            checker.add(value_pos(mapping, "environment"), f"{block_where} has no `name`")
        return None
    return Environment(name.value, url.value if url else None)


def runs_on(checker: Checker, mapping: CommentedMap, where: str) -> list[str]:
    """Labels: a string, a list, or `{group, labels}` (the group is recorded as a label too)."""
    if "runs-on" not in mapping:
        return []
    value = mapping["runs-on"]
    if isinstance(value, CommentedMap):
        checker.unknown_keys(value, ("group", "labels"), f"`runs-on` of {where}")
        labels = checker.string_list(value, "labels", where) if "labels" in value else []
        group = scalar_text(value.get("group"))
        return [*([f"group:{group}"] if group else []), *labels]
    return checker.string_list(mapping, "runs-on", where)


def container_image(
    checker: Checker, mapping: CommentedMap, where: str
) -> tuple[Text | None, dict[str, Text]]:
    """`container:` (a string or a mapping with `image`): the job's image, as `image:` is, and
    the container's `env` (under the job's own)."""
    value = mapping["container"]
    if isinstance(value, str):
        return checker.optional_str(mapping, "container", where), {}
    block = checker.mapping(mapping, "container", where, "an image name or a mapping")
    if block is None:
        return None, {}
    block_where = f"`container` of {where}"
    checker.unknown_keys(block, CONTAINER_KEYS, block_where)
    image = checker.optional_str(block, "image", block_where)
    if image is None and "image" not in block:
        checker.add(value_pos(mapping, "container"), f"{block_where} has no `image`")
    return image, checker.env(block, block_where)


def services(checker: Checker, mapping: CommentedMap, where: str) -> tuple[ServiceContainer, ...]:
    from app.runners.base import ServiceContainer  # app.runners imports app.workflow

    block = checker.mapping(mapping, "services", where, "a mapping of service names")
    if block is None:
        return ()
    result: list[ServiceContainer] = []
    for name, body in block.items():
        service_where = f"service {describe(name)} of {where}"
        if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
            checker.add(
                key_pos(block, name),
                f"{service_where}: the name must be a DNS label (lowercase letters, digits, '-')",
            )
            continue
        if not isinstance(body, CommentedMap):
            checker.add(value_pos(block, name), f"{service_where} must be a mapping with `image`")
            continue
        checker.unknown_keys(body, CONTAINER_KEYS, service_where)
        image = checker.optional_str(body, "image", service_where)
        if image is None:
            if "image" not in body:
                checker.add(key_pos(block, name), f"{service_where} has no `image`")
            continue
        env = {k: t.value for k, t in checker.env(body, service_where).items()}
        ports = _ports(checker, body, service_where)
        options = checker.optional_str(body, "options", service_where)
        result.append(
            ServiceContainer(
                name=name,
                image=image.value,
                env=env,
                ports=ports,
                options=options.value if options else None,
            )
        )
    return tuple(result)


def _ports(checker: Checker, body: CommentedMap, where: str) -> tuple[int, ...]:
    """Container-side ports: `80`, `"8080:80"` and `"8080:80/tcp"` all give 80."""
    if "ports" not in body:
        return ()
    value = body["ports"]
    if not isinstance(value, list):
        checker.add(value_pos(body, "ports"), f"`ports` of {where} must be a list")
        return ()
    ports: list[int] = []
    for item in value:
        text = (scalar_text(item) or "").split("/")[0].split(":")[-1]
        if text.isdigit() and 0 < int(text) < 65536:
            ports.append(int(text))
        else:
            checker.add(
                value_pos(body, "ports"),
                f"`ports` of {where}: {describe(item)} is not a port or 'host:container' pair",
            )
    return tuple(ports)


def kubernetes(checker: Checker, mapping: CommentedMap, where: str) -> KubernetesOptions | None:
    from app.runners.base import KubernetesOptions  # app.runners imports app.workflow

    block = checker.mapping(mapping, "kubernetes", where, "a mapping")
    if block is None:
        return None
    block_where = f"`kubernetes` of {where}"
    checker.unknown_keys(block, KUBERNETES_KEYS, block_where)
    resources: dict[str, dict[str, str]] = {}
    res = checker.mapping(block, "resources", block_where, "a mapping with requests/limits")
    if res is not None:
        checker.unknown_keys(res, ("requests", "limits"), f"`resources` of {block_where}")
        for kind in ("requests", "limits"):
            values = checker.string_map(res, kind, f"`resources` of {block_where}", "resource")
            if values:
                resources[kind] = {k: t.value for k, t in values.items()}
    selector = checker.string_map(block, "node-selector", block_where, "label")
    tolerations: list[dict[str, Any]] = []
    if "tolerations" in block:
        value = block["tolerations"]
        if isinstance(value, list) and all(isinstance(t, CommentedMap) for t in value):
            tolerations = [plain(t) for t in value]
        else:
            checker.add(
                value_pos(block, "tolerations"),
                f"`tolerations` of {block_where} must be a list of mappings",
            )
    pull = (
        checker.string_list(block, "image-pull-secrets", block_where)
        if ("image-pull-secrets" in block)
        else []
    )

    def text(key: str) -> str | None:
        found = checker.optional_str(block, key, block_where)
        return found.value if found else None

    return KubernetesOptions(
        resources=resources,
        node_selector={k: t.value for k, t in selector.items()},
        tolerations=tuple(tolerations),
        service_account_name=text("service-account-name"),
        image_pull_secrets=tuple(pull),
        runtime_class_name=text("runtime-class-name"),
        priority_class_name=text("priority-class-name"),
    )
