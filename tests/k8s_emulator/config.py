"""The kubelet's container config step: volumes (owned as the kubelet leaves them), the
environment (Secrets, fieldRefs, `$(VAR)`), the user, argv and working directory. A problem
raises ConfigError (CreateContainerConfigError, retried)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.k8s_emulator.errors import ConfigError
from tests.k8s_emulator.expansion import expand, mapping_for
from tests.k8s_emulator.runtime import CONTAINER_MARK, HOST_IP, NODE_NAME, PodRuntime
from tests.k8s_emulator.store import SECRETS
from tests.k8s_emulator.users import (
    Identity,
    Sandbox,
    identity_for,
    own_secret_file,
    own_volume,
    root_owned,
)
from tests.k8s_emulator.validation import decode_secret

if TYPE_CHECKING:
    from tests.k8s_emulator.cluster import Cluster

Obj = dict[str, Any]


@dataclass(frozen=True)
class Spawn:
    """How to start one container's PID 1 (and, for the first container, its exec'd processes)."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    sandbox: Sandbox


def _mount_volumes(
    cluster: Cluster, runtime: PodRuntime, spec: Obj, container: Obj, fs_group: int | None
) -> list[tuple[str, str]]:
    """Each mounted volume is a per-pod local dir, created and owned like the kubelet does;
    returns (mountPath, local dir) longest first."""
    volumes_dir = runtime.directory / "volumes"
    if not volumes_dir.exists():
        volumes_dir.mkdir(parents=True)
        root_owned(volumes_dir, 0o711)
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    mounts: list[tuple[str, str]] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"], {})
        local = volumes_dir / mount["name"]
        fresh = not local.exists()
        local.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            secret_name = volume["secret"].get("secretName", "")
            secret = cluster.store.get(SECRETS, runtime.namespace, secret_name)
            if secret is None:
                raise ConfigError(f'secret "{secret_name}" not found')
            for key, value in decode_secret(secret).items():
                (local / key).write_text(value)
                own_secret_file(local / key, fs_group)
            if fresh:
                root_owned(local, 0o755)
        elif fresh:
            own_volume(local, fs_group)
        sub = mount.get("subPath")
        target = local / sub if sub else local
        if not target.exists():
            target.mkdir(parents=True)
            own_volume(target, fs_group)
        mounts.append((str(mount["mountPath"]).rstrip("/") or "/", str(target)))
    mounts.sort(key=lambda m: len(m[0]), reverse=True)
    return mounts


def _rootfs(runtime: PodRuntime, container: str, identity: Identity) -> tuple[Path, Path]:
    """The container's own filesystem (root's, not writable by others) and the default HOME:
    /root for root, `/` for a uid the image does not know (containerd's default)."""
    rootfs = runtime.directory / "rootfs" / container
    if not rootfs.exists():
        rootfs.mkdir(parents=True)
        root_owned(rootfs.parent, 0o755)
        root_owned(rootfs, 0o755)
        (rootfs / "root").mkdir()
        root_owned(rootfs / "root", 0o700)
    return rootfs, (rootfs / "root" if identity.uid == 0 else rootfs)


def container_spawn(
    cluster: Cluster, runtime: PodRuntime, spec: Obj, container: Obj, *, hostname: str
) -> Spawn:
    """Work out argv, cwd, env and the user; raises ConfigError like the kubelet's config step."""
    image = str(container.get("image", ""))
    pod = f"{runtime.name}_{runtime.namespace}({runtime.uid})"
    identity = identity_for(spec, container, cluster.images.user_for(image), pod)
    mounts = _mount_volumes(cluster, runtime, spec, container, identity.fs_group)

    def translate(value: str) -> str | None:
        for mount_path, local_path in mounts:
            if value == mount_path or value.startswith(mount_path + "/"):
                return local_path + value[len(mount_path) :]
        return None

    env = resolve_env(cluster, runtime, container)
    env = {key: translate(value) or value for key, value in env.items()}
    rootfs, home = _rootfs(runtime, str(container.get("name", "")), identity)
    base = {
        "PATH": cluster.images.path_for(image),
        "HOSTNAME": hostname,
        "HOME": str(home),
        "KUBERNETES_SERVICE_HOST": HOST_IP,
        "KUBERNETES_SERVICE_PORT": str(cluster.port),
    }
    mark = f"{runtime.uid}/{container.get('name', '')}"
    full_env = {**base, **env, CONTAINER_MARK: mark}
    lookup = mapping_for(full_env)
    argv = [expand(str(a), lookup) for a in (container.get("command") or [])]
    argv += [expand(str(a), lookup) for a in (container.get("args") or [])]
    if not argv:
        argv = cluster.images.entrypoint_for(image, container)
    working_dir = container.get("workingDir")
    if working_dir:
        cwd = translate(working_dir)
        if cwd is None:
            # Not a volume: the runtime creates it inside the container's filesystem.
            cwd = (
                working_dir if os.path.isdir(working_dir) else str(rootfs / working_dir.lstrip("/"))
            )
    else:
        cwd = str(rootfs)
    Path(cwd).mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(identity, hostname, runtime.hosts, runtime.pause_pid)
    return Spawn(argv, cwd, full_env, sandbox)


def resolve_env(cluster: Cluster, runtime: PodRuntime, container: Obj) -> dict[str, str]:
    env: dict[str, str] = {}
    store = cluster.store
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref is None:
            if "configMapRef" in source:
                if source["configMapRef"].get("optional"):
                    continue
                raise ConfigError(f'configmap "{source["configMapRef"].get("name")}" not found')
            continue
        secret = store.get(SECRETS, runtime.namespace, ref.get("name", ""))
        if secret is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'secret "{ref.get("name")}" not found')
        prefix = source.get("prefix", "")
        for key, value in decode_secret(secret).items():
            env[prefix + key] = value
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), mapping_for(env))
            continue
        value_from = item["valueFrom"]
        if "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            secret = store.get(SECRETS, runtime.namespace, ref.get("name", ""))
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref.get("name")}" not found')
            values = decode_secret(secret)
            if ref.get("key") not in values:
                if ref.get("optional"):
                    continue
                raise ConfigError(
                    f"couldn't find key {ref.get('key')} in Secret "
                    f"{runtime.namespace}/{ref.get('name')}"
                )
            env[name] = values[ref["key"]]
        elif "fieldRef" in value_from:
            path = value_from["fieldRef"].get("fieldPath", "")
            env[name] = {
                "metadata.name": runtime.name,
                "metadata.namespace": runtime.namespace,
                "metadata.uid": runtime.uid,
                "spec.nodeName": NODE_NAME,
                "status.hostIP": HOST_IP,
                "status.podIP": runtime.pod_ip or "",
            }.get(path, "")
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            if not ref.get("optional"):
                raise ConfigError(f'configmap "{ref.get("name")}" not found')
        else:
            env[name] = ""
    return env
