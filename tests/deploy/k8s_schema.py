"""Check rendered manifests against the Kubernetes API types, offline.

`kubectl --dry-run=client` needs a reachable API server for its discovery and OpenAPI download, so
it cannot validate here. The kubernetes-asyncio package (already a runtime dependency) ships the
generated model of every API type: each model's `openapi_types` and `attribute_map` describe its
fields. Walking a manifest against them catches misspelt or misplaced fields and wrong value
types, and building the models runs their client-side checks for required fields.
"""

from __future__ import annotations

import re
from typing import Any

from kubernetes_asyncio import client

KIND_MODELS: dict[tuple[str, str], str] = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
}

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(([^,]+), (.+)\)$")
# Quantities (resources) and IntOrString (ports) are typed `str`/`object` in the models but the
# API server also takes YAML numbers for them.
_NUMBER_OK_PARENTS = {"V1ResourceRequirements"}


def _check(value: Any, type_name: str, path: str, parent: str, errors: list[str]) -> Any:
    """Return the value converted for the model constructors; append problems to errors."""
    if value is None:
        return None
    if match := _LIST.match(type_name):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return None
        return [
            _check(item, match.group(1), f"{path}[{i}]", parent, errors)
            for i, item in enumerate(value)
        ]
    if match := _DICT.match(type_name):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return None
        return {
            key: _check(item, match.group(2), f"{path}.{key}", parent, errors)
            for key, item in value.items()
        }
    if type_name == "str":
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not isinstance(value, str) and not (numeric and parent in _NUMBER_OK_PARENTS):
            errors.append(f"{path}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if type_name == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected a boolean, got {type(value).__name__} {value!r}")
        return value
    if type_name in ("object", "float", "datetime", "date"):
        return value
    model = getattr(client, type_name, None)
    if model is None:
        errors.append(f"{path}: unknown model type {type_name}")
        return None
    if not isinstance(value, dict):
        errors.append(f"{path}: expected a {type_name} object, got {type(value).__name__}")
        return None
    json_to_attr = {json_name: attr for attr, json_name in model.attribute_map.items()}
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        attr = json_to_attr.get(key)
        if attr is None:
            errors.append(f"{path}.{key}: unknown field for {type_name}")
            continue
        kwargs[attr] = _check(item, model.openapi_types[attr], f"{path}.{key}", type_name, errors)
    try:
        return model(**kwargs)
    except ValueError as exc:  # the generated models raise ValueError for a missing required field
        errors.append(f"{path}: {type_name}: {exc}")
        return None


def validate(manifest: dict[str, Any]) -> list[str]:
    """Problems found in one manifest (empty when it matches its API type)."""
    key = (str(manifest.get("apiVersion")), str(manifest.get("kind")))
    model = KIND_MODELS.get(key)
    if model is None:
        return [f"no model known for apiVersion/kind {key}"]
    name = manifest.get("metadata", {}).get("name", "?")
    errors: list[str] = []
    _check(manifest, model, f"{key[1]}/{name}", "", errors)
    return errors
