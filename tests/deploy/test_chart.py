"""The Helm chart renders into the manifests production needs.

Rendered with the real `helm template` (`.ci/run` installs it with tests/deploy/install_helm.py;
without it these tests fail rather than skip), then every object is validated strictly against
the Kubernetes OpenAPI schemas with kubernetes-validate.
"""

from __future__ import annotations

import ast
import base64
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.config import Settings
from app.runners.kubernetes import REQUIRED_RBAC

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ci-executor"
ROUTE = CHART / "examples" / "apisix-route.yaml"
PORT = 10056
RELEASE = "ci-executor"
NAMESPACE = "ci"

# Every Kubernetes API call app/runners/kubernetes.py makes, as (api group, resource, verb). The
# Role must grant exactly these, no more and no less; test_runner_calls_are_the_listed_ones keeps
# this list equal to what the runner's source calls.
# The verbs the runner calls, from the runner itself: one source of truth for code and chart.
RUNNER_API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    (group, resource, verb) for (group, resource), verbs in REQUIRED_RBAC.items() for verb in verbs
)
SECRET_SETTINGS = frozenset({"DATABASE_URL", "QUEUE_URL", "API_TOKENS", "K8S_MARKER_SECRET"})
DB_PASSWORD = "s3cret-db-pw"
MQ_PASSWORD = "s3cret-mq-pw"
PROD_VALUES: dict[str, Any] = {
    "secret": {
        "databaseUrl": f"postgresql+asyncpg://ci:{DB_PASSWORD}@postgres:5432/ci",
        "queueUrl": f"amqp://ci:{MQ_PASSWORD}@rabbitmq:5672/",
        "apiTokens": "frontend:tok-read-123:read,pipeline:tok-write-456:write",
        "k8sMarkerSecret": "marker-key-789",
    }
}

Manifests = list[dict[str, Any]]
Renderer = Callable[..., Manifests]


class RenderFailed(Exception):
    """Rendering was refused (a `fail`, a `required` value, a template error)."""


def _helm_binary() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    venv_helm = Path(sys.executable).parent / "helm"
    return str(venv_helm) if venv_helm.is_file() else None


HELM = _helm_binary()
K8S_VERSION = "1.33.0"  # the oldest Kubernetes the chart supports


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge key by key, anything else replaces; None deletes."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def validate(doc: dict[str, Any]) -> list[str]:
    """Strict schema problems of one manifest (unknown fields are errors)."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        # Only CRDs (the Prometheus Operator's ServiceMonitor) have no built-in schema.
        assert doc["apiVersion"].startswith("monitoring.coreos.com/"), doc["kind"]
        return []
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        return [f"{doc['kind']}/{doc['metadata']['name']}.{where}: {exc.message}"]
    return []


def _helm_render(
    values: dict[str, Any], tmp_path: Path, release: str = RELEASE, namespace: str = NAMESPACE
) -> Manifests:
    assert HELM is not None, "no helm: `.venv/bin/python tests/deploy/install_helm.py`"
    values_file = tmp_path / "values.yaml"
    # A values file (not --set) so numbers reach templates the way they do in real installs.
    values_file.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [HELM, "template", release, str(CHART), "--namespace", namespace, "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise RenderFailed(result.stderr)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture
def render(tmp_path: Path) -> Callable[..., Manifests]:
    def run(values: dict[str, Any] | None = None, **kwargs: str) -> Manifests:
        return _helm_render(merge_values(PROD_VALUES, values or {}), tmp_path, **kwargs)

    return run


@pytest.fixture
def prod(render: Callable[..., Manifests]) -> Manifests:
    return render()


def one(docs: Manifests, kind: str, *, hook: bool | None = False) -> dict[str, Any]:
    found = of_kind(docs, kind, hook=hook)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def of_kind(docs: Manifests, kind: str, *, hook: bool | None = None) -> Manifests:
    def is_hook(doc: dict[str, Any]) -> bool:
        return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})

    return [d for d in docs if d["kind"] == kind and (hook is None or is_hook(d) == hook)]


def container(pod_owner: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_owner["spec"]["template"]["spec"]["containers"]
    return dict(only)


def pod_spec(pod_owner: dict[str, Any]) -> dict[str, Any]:
    return dict(pod_owner["spec"]["template"]["spec"])


# ---------------------------------------------------------------------------------------------


def test_renders_every_kind_once(prod: Manifests) -> None:
    kinds = sorted((d["kind"], "hook" in str(d["metadata"].get("annotations"))) for d in prod)
    assert kinds == [
        ("ConfigMap", False),
        ("Deployment", False),
        ("Job", True),
        ("LimitRange", False),
        ("Namespace", False),
        ("NetworkPolicy", False),
        ("PodDisruptionBudget", False),
        ("ResourceQuota", False),
        ("Role", False),
        ("RoleBinding", False),
        ("Secret", False),
        ("Secret", True),
        ("Service", False),
        ("ServiceAccount", False),
    ]
    builds = f"{NAMESPACE}-builds"
    in_builds = {"LimitRange", "NetworkPolicy", "ResourceQuota", "Role", "RoleBinding"}
    for doc in prod:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == builds
        else:
            expected = builds if doc["kind"] in in_builds else NAMESPACE
            assert doc["metadata"]["namespace"] == expected, doc["kind"]


def test_manifests_match_the_kubernetes_api_types(prod: Manifests) -> None:
    problems = [problem for doc in prod for problem in validate(doc)]
    assert problems == []


def test_schema_check_catches_mistakes() -> None:
    base = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    assert validate({**base, "data": {"PORT": "10056"}}) == []
    (wrong_type,) = validate({**base, "data": {"PORT": 10056}})
    assert wrong_type.startswith("ConfigMap/x.data.PORT: 10056 is not of type")
    (unknown,) = validate({**base, "dta": {}})
    assert "dta" in unknown


def test_role_grants_exactly_the_runner_calls(prod: Manifests) -> None:
    role = one(prod, "Role")
    granted: list[tuple[str, str, str]] = [
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]
    assert len(granted) == len(set(granted)), "a permission is granted twice"
    assert set(granted) == RUNNER_API_CALLS
    assert not [rule for rule in role["rules"] if set(rule) - {"apiGroups", "resources", "verbs"}]


# kubernetes-asyncio method name parts -> RBAC verb and resource.
_VERBS = {
    "create": "create",
    "read": "get",
    "list": "list",
    "delete": "delete",
    "delete_collection": "deletecollection",
    "patch": "patch",
    "replace": "update",
    "connect_get": "create",  # exec over a websocket: `create` since 1.30, `get` before
}
_RESOURCES = {
    "job": ("batch", "jobs"),
    "pod": ("", "pods"),
    "pod_log": ("", "pods/log"),
    "pod_exec": ("", "pods/exec"),
    "secret": ("", "secrets"),
    "event": ("", "events"),
}
_API_METHOD = re.compile(
    r"^(" + "|".join(sorted(_VERBS, key=len, reverse=True)) + r")_namespaced_(\w+)$"
)


def _runner_calls(source: str) -> set[tuple[str, str, str]]:
    """The RBAC permissions a module's kubernetes-asyncio calls need, read from its syntax tree."""
    calls: set[tuple[str, str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        match = _API_METHOD.match(node.func.attr)
        if match is None:
            continue
        verb, resource = _VERBS[match.group(1)], match.group(2)
        assert resource in _RESOURCES, f"unknown resource in {node.func.attr}: extend _RESOURCES"
        group, plural = _RESOURCES[resource]
        watches = any(
            kw.arg == "watch" and isinstance(kw.value, ast.Constant) and kw.value.value is True
            for kw in node.keywords
        )
        calls.add((group, plural, "watch" if watches else verb))
        if match.group(1) == "connect_get":
            calls.add((group, plural, "get"))
    return calls


def test_runner_calls_are_the_listed_ones() -> None:
    sources = sorted((ROOT / "app").rglob("*.py"))
    found = set().union(*(_runner_calls(path.read_text()) for path in sources))
    assert found == RUNNER_API_CALLS, (
        "the runner's Kubernetes calls changed: update RUNNER_API_CALLS and templates/role.yaml"
    )


def test_runner_call_scan_sees_watches_and_logs() -> None:
    source = (
        "api.list_namespaced_pod(ns, watch=True)\n"
        "api.read_namespaced_pod_log(name, ns, follow=True)\n"
        "api.delete_collection_namespaced_job(ns)\n"
    )
    assert _runner_calls(source) == {
        ("", "pods", "watch"),
        ("", "pods/log", "get"),
        ("batch", "jobs", "deletecollection"),
    }


def test_rolebinding_gives_the_role_to_the_pods_account(prod: Manifests) -> None:
    role = one(prod, "Role")
    binding = one(prod, "RoleBinding")
    account = one(prod, "ServiceAccount")
    deployment = one(prod, "Deployment")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert pod_spec(deployment)["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is True


def test_builds_in_another_namespace_get_the_role_there(render: Renderer) -> None:
    docs = render({"config": {"k8sNamespace": "ci-builds"}})
    assert one(docs, "Role")["metadata"]["namespace"] == "ci-builds"
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "ci-builds"
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    assert one(docs, "ConfigMap")["data"]["K8S_NAMESPACE"] == "ci-builds"
    assert one(docs, "Deployment")["metadata"]["namespace"] == NAMESPACE


def test_builds_get_a_hardened_namespace_of_their_own(render: Renderer) -> None:
    docs = render(namespace="team-a")
    assert one(docs, "ConfigMap")["data"]["K8S_NAMESPACE"] == "team-a-builds"
    assert one(docs, "Role")["metadata"]["namespace"] == "team-a-builds"
    labels = one(docs, "Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert one(docs, "ResourceQuota")["spec"]["hard"]["pods"] == "50"
    assert one(docs, "LimitRange")["spec"]["limits"][0]["type"] == "Container"
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchExpressions"][0]["key"] == "ci-executor/build-id"
    assert policy["ingress"] == []
    (dns, world, executor) = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert "10.0.0.0/8" in world["to"][0]["ipBlock"]["except"]
    # Build pods reach the executor's API pods (artifacts, caches) on the service port, and those
    # only: not the migration hook's pods, not other releases.
    (peer,) = executor["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "team-a"}
    server = one(docs, "Service")["spec"]["selector"]
    assert peer["podSelector"]["matchLabels"] == server
    assert executor["ports"] == [{"protocol": "TCP", "port": 10056}]
    data = one(docs, "ConfigMap")["data"]
    service = one(docs, "Service")["metadata"]["name"]
    assert data["ACTIONS_PUBLIC_URL"] == f"http://{service}.team-a.svc:10056"
    closed = render({"builds": {"networkPolicy": {"allowExecutor": False}}})
    assert len(one(closed, "NetworkPolicy")["spec"]["egress"]) == 2
    mirror = render({"config": {"actionsPublicUrl": "https://ci.example.com"}})
    assert one(mirror, "ConfigMap")["data"]["ACTIONS_PUBLIC_URL"] == "https://ci.example.com"
    opened = render({"builds": {"networkPolicy": {"allowClusterAccess": True}}})
    assert "except" not in one(opened, "NetworkPolicy")["spec"]["egress"][1]["to"][0]["ipBlock"]
    given = render({"builds": {"namespace": "shared", "createNamespace": False}})
    assert of_kind(given, "Namespace") == []
    assert one(given, "Role")["metadata"]["namespace"] == "shared"


def test_an_open_api_is_refused_unless_asked_for(render: Renderer) -> None:
    with pytest.raises(RenderFailed, match=r"secret\.apiTokens is empty"):
        render({"secret": {"apiTokens": ""}})
    docs = render({"secret": {"apiTokens": ""}, "allowUnauthenticated": True})
    assert one(docs, "Deployment")


def test_the_marker_secret_is_generated_when_not_given(render: Renderer) -> None:
    docs = render({"secret": {"k8sMarkerSecret": ""}})
    marker = base64.b64decode(one(docs, "Secret")["data"]["K8S_MARKER_SECRET"]).decode()
    assert len(marker) == 48


def test_values_are_checked_against_the_schema(render: Renderer) -> None:
    with pytest.raises(RenderFailed, match="replicaCount"):
        render({"replicaCount": "two"})
    with pytest.raises(RenderFailed, match="replicas"):
        render({"replicas": 2})


def test_disruption_budget_and_metrics(render: Renderer, prod: Manifests) -> None:
    pdb = one(prod, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    annotations = one(prod, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORT)
    assert of_kind(render({"replicaCount": 1}), "PodDisruptionBudget") == []
    docs = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"team": "ci"}}}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["team"] == "ci"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]


def test_rbac_and_account_can_be_left_to_the_cluster_admin(render: Renderer) -> None:
    docs = render({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "ci"}})
    assert not of_kind(docs, "Role")
    assert not of_kind(docs, "RoleBinding")
    assert not of_kind(docs, "ServiceAccount")
    assert pod_spec(one(docs, "Deployment"))["serviceAccountName"] == "ci"


def test_probes_hit_healthz_and_readyz_on_the_service_port(prod: Manifests) -> None:
    app = container(one(prod, "Deployment"))
    assert app["args"] == ["serve"]
    assert app["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    assert app["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert app["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert app["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_service_is_cluster_ip_on_10056_and_selects_only_api_pods(prod: Manifests) -> None:
    service = one(prod, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    selector = service["spec"]["selector"].items()
    deployment = one(prod, "Deployment")
    assert selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() == selector
    # A running migration pod has no readiness probe; it must never receive API traffic.
    migration = one(prod, "Job", hook=True)
    assert not selector <= migration["spec"]["template"]["metadata"]["labels"].items()


def test_env_comes_from_the_configmap_and_the_secret(prod: Manifests) -> None:
    config = one(prod, "ConfigMap")
    secret = one(prod, "Secret")
    app = container(one(prod, "Deployment"))
    assert app["envFrom"] == [
        {"configMapRef": {"name": config["metadata"]["name"]}},
        {"secretRef": {"name": secret["metadata"]["name"]}},
    ]
    assert "env" not in app
    data = config["data"]
    assert data["RUNNER"] == "kubernetes"
    assert data["K8S_NAMESPACE"] == f"{NAMESPACE}-builds"
    assert data["PORT"] == str(PORT)
    assert data["HOST"] == "0.0.0.0"
    assert all(isinstance(value, str) for value in data.values())


def test_secrets_stay_out_of_the_configmap(prod: Manifests) -> None:
    config = one(prod, "ConfigMap")
    secret = one(prod, "Secret")
    assert set(secret["data"]) == SECRET_SETTINGS
    assert not set(config["data"]) & SECRET_SETTINGS
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "DATABASE_URL": PROD_VALUES["secret"]["databaseUrl"],
        "QUEUE_URL": PROD_VALUES["secret"]["queueUrl"],
        "API_TOKENS": PROD_VALUES["secret"]["apiTokens"],
        "K8S_MARKER_SECRET": PROD_VALUES["secret"]["k8sMarkerSecret"],
    }
    # No secret value may appear in clear text in any manifest.
    clear_text = yaml.safe_dump_all(prod)
    for value in (DB_PASSWORD, MQ_PASSWORD, "tok-write-456", "marker-key-789"):
        assert value not in clear_text


def test_every_setting_the_chart_writes_is_one_the_app_reads(prod: Manifests) -> None:
    known = {name.upper() for name in Settings.model_fields}
    written = set(one(prod, "ConfigMap")["data"]) | set(one(prod, "Secret")["data"])
    assert written - known == set()


def test_the_app_accepts_the_rendered_settings(prod: Manifests) -> None:
    config = one(prod, "ConfigMap")["data"]
    secret = {k: base64.b64decode(v).decode() for k, v in one(prod, "Secret")["data"].items()}
    settings = Settings(**{k.lower(): v for k, v in (config | secret).items()})
    assert settings.runner == "kubernetes"
    assert settings.port == PORT
    assert [token.role for token in settings.tokens] == ["read", "write"]


def test_extra_config_reaches_the_configmap_as_strings(render: Renderer) -> None:
    docs = render({"extraConfig": {"MAX_CONCURRENT_JOBS": 8, "QUEUE_NAME": "ci.builds.prod"}})
    data = one(docs, "ConfigMap")["data"]
    assert data["MAX_CONCURRENT_JOBS"] == "8"
    assert data["QUEUE_NAME"] == "ci.builds.prod"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("DATABASE_URL", "extraConfig.DATABASE_URL is a secret setting"),
        ("API_TOKENS", "extraConfig.API_TOKENS is a secret setting"),
        ("RUNNER", "extraConfig.RUNNER is set by the chart"),
    ],
)
def test_extra_config_refuses_secret_and_chart_settings(
    render: Renderer, key: str, message: str
) -> None:
    with pytest.raises(RenderFailed, match=re.escape(message)):
        render({"extraConfig": {key: "x"}})


@pytest.mark.parametrize("missing", ["databaseUrl", "queueUrl"])
def test_connection_urls_are_required_without_an_existing_secret(
    render: Renderer, missing: str
) -> None:
    with pytest.raises(RenderFailed, match=f"secret.{missing} is required"):
        render({"secret": {missing: ""}})


def test_existing_secret_replaces_the_charts_secrets(render: Renderer) -> None:
    docs = render({"secret": {"existingSecret": "ci-executor-prod", "databaseUrl": None}})
    assert not of_kind(docs, "Secret")
    deployment = one(docs, "Deployment")
    assert {"secretRef": {"name": "ci-executor-prod"}} in container(deployment)["envFrom"]
    assert "checksum/secret" not in deployment["spec"]["template"]["metadata"]["annotations"]
    migrate_env = container(one(docs, "Job", hook=True))["env"]
    assert migrate_env[0] == {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "ci-executor-prod", "key": "DATABASE_URL"}},
    }


def test_migration_runs_once_per_release_as_a_hook(prod: Manifests) -> None:
    job = one(prod, "Job", hook=True)
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    migrate = container(job)
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == container(one(prod, "Deployment"))["image"]
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    # Pre-install hooks run before the release's ServiceAccount, ConfigMap and Secret exist.
    assert "serviceAccountName" not in spec
    assert spec["automountServiceAccountToken"] is False
    assert "envFrom" not in migrate
    (db_env,) = [e for e in migrate["env"] if e["name"] == "DATABASE_URL"]
    hook_secret = one(prod, "Secret", hook=True)
    assert db_env["valueFrom"]["secretKeyRef"]["name"] == hook_secret["metadata"]["name"]
    secret_annotations = hook_secret["metadata"]["annotations"]
    assert secret_annotations["helm.sh/hook"] == annotations["helm.sh/hook"]
    # Helm creates hooks in weight order: the Secret must exist before the Job's pod starts.
    assert int(secret_annotations["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    assert set(hook_secret["data"]) == {"DATABASE_URL"}


def test_migration_can_be_turned_off(render: Renderer) -> None:
    docs = render({"migration": {"enabled": False}})
    assert not of_kind(docs, "Job")
    assert not of_kind(docs, "Secret", hook=True)


def test_pods_run_as_non_root(prod: Manifests) -> None:
    for owner in (one(prod, "Deployment"), one(prod, "Job", hook=True)):
        pod_security = pod_spec(owner)["securityContext"]
        assert pod_security["runAsNonRoot"] is True
        assert pod_security["runAsUser"] == 10001
        security = container(owner)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        # A read-only root needs a writable /tmp for the workspace root and temp files.
        assert security["readOnlyRootFilesystem"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in container(owner)["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {}} in pod_spec(owner)["volumes"]


def test_graceful_shutdown_outlasts_the_apps_grace(prod: Manifests) -> None:
    spec = pod_spec(one(prod, "Deployment"))
    assert spec["terminationGracePeriodSeconds"] == 60
    grace = float(one(prod, "ConfigMap")["data"]["SHUTDOWN_GRACE_SECONDS"])
    # `ci-executor serve` gives uvicorn SHUTDOWN_GRACE_SECONDS + 15 s to drain; the kubelet's
    # SIGKILL must not come first.
    assert grace + 15 <= spec["terminationGracePeriodSeconds"]


def test_values_reach_the_deployment(render: Renderer) -> None:
    resources = {"requests": {"cpu": "250m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}}
    docs = render(
        {
            "replicaCount": 3,
            "terminationGracePeriodSeconds": 120,
            "resources": resources,
            "image": {"repository": "registry.local/ci-executor", "tag": "1.2.3"},
            "nodeSelector": {"pool": "ci"},
        }
    )
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] == 120
    assert pod_spec(deployment)["nodeSelector"] == {"pool": "ci"}
    assert container(deployment)["resources"] == resources
    assert container(deployment)["image"] == "registry.local/ci-executor:1.2.3"
    assert container(one(docs, "Job", hook=True))["image"] == "registry.local/ci-executor:1.2.3"


def test_replicas_spread_over_nodes_by_default(prod: Manifests, render: Renderer) -> None:
    affinity = pod_spec(one(prod, "Deployment"))["affinity"]
    (term,) = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    labels = one(prod, "Service")["spec"]["selector"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == labels
    docs = render({"podAntiAffinity": False})
    assert "affinity" not in pod_spec(one(docs, "Deployment"))


def test_config_changes_roll_the_pods(render: Renderer) -> None:
    def checksums(values: dict[str, Any]) -> dict[str, str]:
        annotations = one(render(values), "Deployment")["spec"]["template"]["metadata"]
        return dict(annotations["annotations"])

    base = checksums({})
    assert (
        checksums({"config": {"logLevel": "DEBUG"}})["checksum/config"] != base["checksum/config"]
    )
    changed_secret = checksums({"secret": {"apiTokens": "x:y:read"}})
    assert changed_secret["checksum/secret"] != base["checksum/secret"]
    assert changed_secret["checksum/config"] == base["checksum/config"]


def test_names_follow_the_release(render: Renderer) -> None:
    docs = render(release="prod")
    assert one(docs, "Deployment")["metadata"]["name"] == "prod-ci-executor"
    assert one(docs, "Job", hook=True)["metadata"]["name"] == "prod-ci-executor-migrate"
    docs = render(release="a" * 53)  # the longest release name Helm accepts
    assert max(len(d["metadata"]["name"]) for d in docs) == 63


# --- every value set renders valid manifests ------------------------------------------------

VALUE_CASES: list[dict[str, Any]] = [
    {},
    {"config": {"k8sNamespace": "ci-builds", "maxConcurrentBuilds": 1000000}},
    {"secret": {"existingSecret": "ci-secrets", "databaseUrl": None}},
    {"metrics": {"serviceMonitor": {"enabled": True}}, "replicaCount": 1},
    {"builds": {"networkPolicy": {"enabled": False}, "resourceQuota": {"enabled": False}}},
    {"rbac": {"create": False}, "serviceAccount": {"create": False}, "podAntiAffinity": False},
    {
        "extraConfig": {"QUEUE_NAME": "q", "LOG_CHUNK_MAX_BYTES": 65536},
        "imagePullSecrets": [{"name": "regcred"}],
        "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "podAnnotations": {"prometheus.io/scrape": "true"},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:x"}},
        "fullnameOverride": "executor",
        "migration": {"enabled": False},
    },
]


@pytest.mark.parametrize("values", VALUE_CASES)
def test_every_value_set_renders_schema_valid_manifests(
    values: dict[str, Any], render: Renderer
) -> None:
    docs = render(values)
    assert [problem for doc in docs for problem in validate(doc)] == []


# --- helm's own checks and the gateway example ----------------------------------------------


def test_helm_lint_passes(tmp_path: Path) -> None:
    assert HELM is not None
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(PROD_VALUES))
    result = subprocess.run(
        [HELM, "lint", "--strict", str(CHART), "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _apisix_rewrite(uri: str, regex_uri: list[str]) -> str:
    pattern, replacement = regex_uri
    return re.sub(pattern, re.sub(r"\$(\d)", r"\\\1", replacement), uri, count=1)


def _apisix_path_matches(path: str, uri: str) -> bool:
    # APISIX (radixtree) treats a trailing `*` as a prefix match, anything else as exact.
    return uri.startswith(path[:-1]) if path.endswith("*") else uri == path


def test_apisix_route_sends_build_calls_here_without_the_prefix(prod: Manifests) -> None:
    route = yaml.safe_load(ROUTE.read_text())
    assert route["apiVersion"] == "apisix.apache.org/v2"
    assert route["kind"] == "ApisixRoute"
    (http,) = route["spec"]["http"]
    assert http["match"]["paths"] == ["/ci_service/api/v1/build*"]
    (backend,) = http["backends"]
    service = one(prod, "Service")
    assert backend == {"serviceName": service["metadata"]["name"], "servicePort": PORT}
    assert route["metadata"]["namespace"] == NAMESPACE
    (rewrite,) = [p for p in http["plugins"] if p["name"] == "proxy-rewrite"]
    assert rewrite["enable"] is True
    regex_uri = rewrite["config"]["regex_uri"]
    paths = http["match"]["paths"]
    for uri, upstream in [
        ("/ci_service/api/v1/builds", "/api/v1/builds"),
        ("/ci_service/api/v1/builds/42/logs/stream", "/api/v1/builds/42/logs/stream"),
    ]:
        assert any(_apisix_path_matches(p, uri) for p in paths)
        assert _apisix_rewrite(uri, regex_uri) == upstream
    assert not any(_apisix_path_matches(p, "/ci_service/api/v1/pipelines/1") for p in paths)
    # SSE log streams stay open for a whole build; the default 60 s read timeout would cut them.
    assert http["timeout"]["read"] == "3600s"
