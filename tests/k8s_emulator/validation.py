"""Admission: the defaulting and the validation the API server applies on create.

Only the rules a CI runner can plausibly trip over are enforced (names, label values, required
fields, restartPolicy for Jobs, env names, volume references, Secret data), with the real messages.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from typing import Any

from tests.k8s_emulator.errors import ApiError
from tests.k8s_emulator.store import EVENTS, JOBS, PODS, SECRETS, Kind, now

Obj = dict[str, Any]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

DNS_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


class Invalid:
    """Collects field errors and raises one 422 Status listing them all, like the API server."""

    def __init__(self, kind: Kind, name: str) -> None:
        self.kind = kind
        self.name = name
        self.causes: list[dict[str, str]] = []

    def add(self, field: str, message: str, reason: str = "FieldValueInvalid") -> None:
        self.causes.append({"reason": reason, "message": message, "field": field})

    def invalid(self, field: str, value: object, detail: str) -> None:
        shown = f'"{value}"' if isinstance(value, str) else str(value)
        self.add(field, f"Invalid value: {shown}: {detail}")

    def required(self, field: str, detail: str = "") -> None:
        self.add(field, f"Required value{': ' + detail if detail else ''}", "FieldValueRequired")

    def raise_if_any(self) -> None:
        if not self.causes:
            return
        group_kind = f"{self.kind.kind}.{self.kind.group}" if self.kind.group else self.kind.kind
        text = ", ".join(f"{c['field']}: {c['message']}" for c in self.causes)
        if len(self.causes) > 1:
            text = f"[{text}]"
        raise ApiError(
            422,
            "Invalid",
            f'{group_kind} "{self.name}" is invalid: {text}',
            {
                "name": self.name,
                "group": self.kind.group,
                "kind": self.kind.kind,
                "causes": self.causes,
            },
        )


def check_subdomain(errors: Invalid, field: str, value: str) -> None:
    if len(value) > 253:
        errors.invalid(field, value, "must be no more than 253 characters")
    if not _DNS_SUBDOMAIN.match(value):
        errors.invalid(field, value, DNS_SUBDOMAIN_MSG)


def check_labels(errors: Invalid, field: str, labels: object) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        errors.invalid(field, str(labels), "must be a map")
        return
    for key, value in labels.items():
        name = key.rsplit("/", 1)[-1]
        if len(name) > 63 or not _QUALIFIED_NAME.match(name):
            errors.invalid(f"{field}", key, "name part must consist of alphanumeric characters")
        if not isinstance(value, str):
            errors.invalid(f"{field}", str(value), "label values must be strings")
            continue
        if len(value) > 63:
            errors.invalid(field, value, "must be no more than 63 characters")
        if not _LABEL_VALUE.match(value):
            errors.invalid(field, value, LABEL_VALUE_MSG)


def admit_metadata(kind: Kind, obj: Obj, namespace: str, generate: str | None = None) -> Invalid:
    """Namespace, name (or generateName), uid, timestamps. Returns the error collector so the
    caller can add kind-specific errors before raising."""
    md = obj.get("metadata")
    if not isinstance(md, dict):
        md = obj["metadata"] = {}
    if md.get("namespace") not in (None, "", namespace):
        raise ApiError.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    md["namespace"] = namespace
    if not md.get("name") and (md.get("generateName") or generate):
        md["name"] = (md.get("generateName") or generate or "") + random_suffix()
    errors = Invalid(kind, md.get("name", ""))
    if not md.get("name"):
        errors.required("metadata.name", "name or generateName is required")
    else:
        check_subdomain(errors, "metadata.name", md["name"])
    check_labels(errors, "metadata.labels", md.get("labels"))
    md["uid"] = str(uuid.uuid4())
    md["creationTimestamp"] = now()
    md.pop("resourceVersion", None)
    md.pop("deletionTimestamp", None)
    return errors


_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix() -> str:
    return "".join(_SUFFIX_ALPHABET[b % len(_SUFFIX_ALPHABET)] for b in uuid.uuid4().bytes[:5])


def generated_name(base: str) -> str:
    # The name generator keeps the whole name within 63 characters.
    return base[:58] + random_suffix()


def default_pod_spec(spec: Obj, restart_default: str) -> None:
    spec.setdefault("restartPolicy", restart_default)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("securityContext", {})
    for container in spec.get("containers") or []:
        if not isinstance(container, dict):
            continue
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        image = str(container.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("resources", {})


def validate_pod_spec(errors: Invalid, field: str, spec: object, *, for_job: bool) -> None:
    if not isinstance(spec, dict):
        errors.required(field)
        return
    containers = spec.get("containers")
    if not containers or not isinstance(containers, list):
        errors.required(f"{field}.containers")
        containers = []
    volumes = {v.get("name") for v in spec.get("volumes") or [] if isinstance(v, dict)}
    seen: set[str] = set()
    for i, container in enumerate(containers):
        where = f"{field}.containers[{i}]"
        if not isinstance(container, dict):
            errors.required(where)
            continue
        name = container.get("name")
        if not name:
            errors.required(f"{where}.name")
        elif not _DNS_LABEL.match(name) or len(name) > 63:
            errors.invalid(f"{where}.name", name, DNS_LABEL_MSG)
        elif name in seen:
            errors.add(f"{where}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate")
        seen.add(str(name))
        if not container.get("image"):
            errors.required(f"{where}.image")
        for j, env in enumerate(container.get("env") or []):
            env_name = env.get("name") if isinstance(env, dict) else None
            if not env_name:
                errors.required(f"{where}.env[{j}].name")
            elif not _ENV_NAME.match(env_name):
                errors.invalid(
                    f"{where}.env[{j}].name",
                    env_name,
                    "a valid environment variable name must consist of alphabetic characters, "
                    "digits, '_', '-', or '.', and must not start with a digit",
                )
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                errors.add(
                    f"{where}.volumeMounts[{j}].name",
                    f'Not found: "{mount.get("name")}"',
                    "FieldValueNotFound",
                )
            if not str(mount.get("mountPath", "")).startswith("/"):
                errors.required(f"{where}.volumeMounts[{j}].mountPath")
    policy = spec.get("restartPolicy")
    if for_job and policy not in ("Never", "OnFailure"):
        errors.add(
            f"{field}.restartPolicy",
            f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
            "FieldValueNotSupported",
        )


def _undecodable(kind: Kind, detail: str) -> ApiError:
    return ApiError.bad_request(
        f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: '
        f"json: {detail}"
    )


def _check_types(kind: Kind, obj: Obj) -> None:
    """What Go's JSON decoding rejects before validation even runs: a float (even 60.0) or a
    bool for an integer field, a non-string label, annotation or env value."""
    md = obj.get("metadata") or {}
    for field in ("labels", "annotations"):
        for value in (md.get(field) or {}).values():
            if not isinstance(value, str):
                raise _undecodable(
                    kind,
                    f"cannot unmarshal {_json_type(value)} into Go struct field "
                    f"ObjectMeta.metadata.{field} of type string",
                )
    raw_spec = obj.get("spec")
    spec: Obj = raw_spec if isinstance(raw_spec, dict) else {}
    integers: list[tuple[str, object]] = []
    pod_spec: object = spec
    if kind is JOBS:
        for field in (
            "activeDeadlineSeconds",
            "backoffLimit",
            "ttlSecondsAfterFinished",
            "completions",
            "parallelism",
        ):
            integers.append((f"JobSpec.spec.{field}", spec.get(field)))
        template = spec.get("template")
        pod_spec = template.get("spec") if isinstance(template, dict) else None
    if isinstance(pod_spec, dict):
        for field in ("activeDeadlineSeconds", "terminationGracePeriodSeconds"):
            integers.append((f"PodSpec.spec.{field}", pod_spec.get(field)))
        for container in pod_spec.get("containers") or []:
            for env in (container.get("env") or []) if isinstance(container, dict) else []:
                value = env.get("value") if isinstance(env, dict) else None
                if value is not None and not isinstance(value, str):
                    raise _undecodable(
                        kind,
                        f"cannot unmarshal {_json_type(value)} into Go struct field "
                        "EnvVar.spec.containers.env.value of type string",
                    )
    for where, value in integers:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise _undecodable(
                kind,
                f"cannot unmarshal {_json_type(value)} into Go struct field {where} of type int64",
            )


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def admit(kind: Kind, obj: Obj, namespace: str) -> Obj:
    if not isinstance(obj, dict):
        raise ApiError.bad_request("the body of the request was in an unknown format")
    _check_types(kind, obj)
    if obj.get("kind") not in (None, kind.kind) or obj.get("apiVersion") not in (
        None,
        kind.api_version,
    ):
        raise ApiError.bad_request(
            f"the API version in the data ({obj.get('apiVersion')}) does not match the expected "
            f"API version ({kind.api_version})"
        )
    if kind is JOBS:
        return _admit_job(obj, namespace)
    if kind is PODS:
        return _admit_pod(obj, namespace)
    if kind is SECRETS:
        return _admit_secret(obj, namespace)
    if kind is EVENTS:
        admit_metadata(EVENTS, obj, namespace).raise_if_any()
        return obj
    raise AssertionError(kind)


def _admit_job(job: Obj, namespace: str) -> Obj:
    errors = admit_metadata(JOBS, job, namespace)
    md = job["metadata"]
    spec = job.get("spec")
    if not isinstance(spec, dict):
        errors.required("spec")
        errors.raise_if_any()
        raise AssertionError
    uid, name = md["uid"], md.get("name", "")
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    spec.setdefault("manualSelector", None)
    if spec["manualSelector"] is None:
        del spec["manualSelector"]
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    for field in ("activeDeadlineSeconds", "ttlSecondsAfterFinished", "backoffLimit"):
        value = spec.get(field)
        minimum = 1 if field == "activeDeadlineSeconds" else 0
        if value is not None and (not isinstance(value, int) or value < minimum):
            errors.invalid(f"spec.{field}", value, f"must be greater than or equal to {minimum}")
    template = spec.get("template")
    if not isinstance(template, dict):
        errors.required("spec.template")
    else:
        tmeta = template.setdefault("metadata", {})
        labels = tmeta.setdefault("labels", {})
        labels.update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
        )
        check_labels(errors, "spec.template.labels", labels)
        if isinstance(template.get("spec"), dict):
            default_pod_spec(template["spec"], "Always")
        validate_pod_spec(errors, "spec.template.spec", template.get("spec"), for_job=True)
    errors.raise_if_any()
    job["status"] = {}
    return job


def _admit_pod(pod: Obj, namespace: str) -> Obj:
    errors = admit_metadata(PODS, pod, namespace)
    spec = pod.get("spec")
    if isinstance(spec, dict):
        default_pod_spec(spec, "Always")
    validate_pod_spec(errors, "spec", spec, for_job=False)
    errors.raise_if_any()
    pod["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    return pod


def _admit_secret(secret: Obj, namespace: str) -> Obj:
    errors = admit_metadata(SECRETS, secret, namespace)
    data = dict(secret.get("data") or {})
    for key, value in data.items():
        if not _SECRET_KEY.match(key):
            errors.invalid(f"data[{key}]", key, "a valid config key must consist of alphanumerics")
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise ApiError.bad_request(
                'Secret in version "v1" cannot be handled as a Secret: illegal base64 data'
            ) from None
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data:
        secret["data"] = data
    secret.setdefault("type", "Opaque")
    errors.raise_if_any()
    return secret


def decode_secret(secret: Obj) -> dict[str, str]:
    return {
        key: base64.b64decode(value).decode("utf-8", "replace")
        for key, value in (secret.get("data") or {}).items()
    }
