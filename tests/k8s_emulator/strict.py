"""Where a real cluster is stricter than a friendly fake: PodSecurity admission, images that lack
tools (busybox has no bash), and the Events the scheduler, kubelet and Job controller record."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

from tests.k8s_emulator.errors import ApiError
from tests.k8s_emulator.store import EVENTS, Store, now

Obj = dict[str, Any]

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
# Volume types the "restricted" level allows (Pod Security Standards, v1.33).
_RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# Images whose filesystem has no bash: the emulator gives their containers a PATH without it.
_NO_BASH_IMAGE_PREFIXES = ("busybox", "alpine", "docker.io/library/busybox", "docker.io/alpine")


def _containers(spec: Obj) -> list[tuple[str, Obj]]:
    out = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                out.append((str(c.get("name", "")), c))
    return out


def pod_security_violations(level: str, spec: Obj) -> list[str]:
    """The checks of the "baseline" and "restricted" Pod Security Standards that a CI pod can
    trip, worded like the apiserver's admission message."""
    if level not in ("baseline", "restricted"):
        return []
    problems: list[str] = []
    psc = spec.get("securityContext") or {}
    containers = _containers(spec)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(f"host namespaces ({key}=true)")
    privileged = [n for n, c in containers if (c.get("securityContext") or {}).get("privileged")]
    if privileged:
        problems.append(f"privileged (containers {privileged} must not set privileged=true)")
    host_paths = [v.get("name") for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:
        problems.append(f"hostPath volumes (volumes {host_paths})")
    if level != "restricted":
        return problems
    bad_volumes = [
        v.get("name")
        for v in spec.get("volumes") or []
        if not (set(v) - {"name"}) <= _RESTRICTED_VOLUMES
    ]
    if bad_volumes:
        problems.append(f"restricted volume types (volumes {bad_volumes})")
    escalation = [
        n
        for n, c in containers
        if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False
    ]
    if escalation:
        problems.append(
            f"allowPrivilegeEscalation != false (containers {escalation} must set "
            "securityContext.allowPrivilegeEscalation=false)"
        )
    caps = []
    for n, c in containers:
        cap = (c.get("securityContext") or {}).get("capabilities") or {}
        if "ALL" not in (cap.get("drop") or []) or set(cap.get("add") or []) - {"NET_BIND_SERVICE"}:
            caps.append(n)
    if caps:
        problems.append(
            f"unrestricted capabilities (containers {caps} must set securityContext.capabilities."
            'drop=["ALL"])'
        )
    non_root = [
        n
        for n, c in containers
        if (c.get("securityContext") or {}).get("runAsNonRoot", psc.get("runAsNonRoot")) is not True
    ]
    if non_root:
        problems.append(
            f"runAsNonRoot != true (pod or containers {non_root} must set "
            "securityContext.runAsNonRoot=true)"
        )
    root = [
        n
        for n, c in containers
        if (c.get("securityContext") or {}).get("runAsUser", psc.get("runAsUser")) == 0
    ]
    if root:
        problems.append(f"runAsUser=0 (containers {root} must not set runAsUser=0)")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    seccomp = [
        n
        for n, c in containers
        if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type", pod_seccomp)
        not in ("RuntimeDefault", "Localhost")
    ]
    if seccomp:
        problems.append(
            f"seccompProfile (pod or containers {seccomp} must set "
            'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
        )
    return problems


def admit_pod_security(namespace_labels: dict[str, str], pod: Obj) -> None:
    level = namespace_labels.get(ENFORCE_LABEL, "privileged")
    problems = pod_security_violations(level, pod.get("spec") or {})
    if problems:
        name = (pod.get("metadata") or {}).get("name", "")
        raise ApiError(
            403,
            "Forbidden",
            f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": '
            + ", ".join(problems),
        )


STANDIN = str(Path(__file__).with_name("standin.py"))
# Images whose entrypoint is a real local server when the machine has it (else the stand-in).
_LOCAL_SERVERS = {
    "redis": ["redis-server", "--port", "{port}", "--bind", "127.0.0.1", "--save", ""],
}


def _short_name(image: str) -> str:
    """`docker.io/library/redis:7@sha256:..` -> `redis`."""
    name = image.rsplit("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


def _public_path(path: str) -> str:
    """The PATH entries any user can reach (pod processes run as other users: a tool found in
    root's private dirs, e.g. ~/.pyenv, would fail for them where a node's image would not)."""

    def public(directory: str) -> bool:
        current = Path(directory)
        if not current.is_dir():
            return False
        for part in [current, *current.parents]:
            try:
                if not part.stat().st_mode & stat.S_IXOTH:
                    return False
            except OSError:
                return False
        return True

    if os.geteuid() != 0:
        return path
    return os.pathsep.join(d for d in path.split(os.pathsep) if d and public(d))


class Images:
    """What each image offers, as far as a CI step notices: its PATH, its user, its entrypoint."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._no_bash: str | None = None
        # Set by the `image-users` / `image-commands` controls; every other image runs as root.
        self.users: dict[str, int | str] = {}
        self.commands: dict[str, list[str]] = {}

    def user_for(self, image: str) -> int | str:
        """The image's USER: a uid, or a name the kubelet cannot check (runAsNonRoot)."""
        return self.users.get(image, self.users.get(_short_name(image), 0))

    def entrypoint_for(self, image: str, container: dict[str, Any]) -> list[str]:
        """What the container runs without `command`/`args`: a service image runs a local
        stand-in listening on its declared ports (a real redis-server for redis images when
        installed); `{standin}` and `{port}`/`{ports}` in registered commands are filled in."""
        ports = [str(p.get("containerPort")) for p in container.get("ports") or []]
        template = self.commands.get(image) or self.commands.get(_short_name(image))
        if template is None:
            local = _LOCAL_SERVERS.get(_short_name(image))
            if local is not None and ports and shutil.which(local[0]):
                template = local
            elif ports:
                template = ["{standin}", "{ports}"]
            else:
                return []
        python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
        argv: list[str] = []
        for word in template:
            if word == "{standin}":
                # -I: the script's directory (tests/k8s_emulator, with its selectors.py) must not
                # shadow the standard library.
                argv += [python, "-I", STANDIN]
            elif word == "{ports}":
                argv += ports
            else:
                argv.append(word.replace("{port}", ports[0] if ports else ""))
        return argv

    def path_for(self, image: str) -> str:
        host = _public_path(os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"))
        name = image.rsplit("@", 1)[0]
        if not name.startswith(_NO_BASH_IMAGE_PREFIXES):
            return host
        if self._no_bash is None:
            self._no_bash = str(self._build_no_bash(host))
        return self._no_bash

    def _build_no_bash(self, host_path: str) -> Path:
        """One directory of links to every host tool except bash (a busybox-like image)."""
        target = self.root / "image-no-bash" / "bin"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for directory in host_path.split(os.pathsep):
            if not os.path.isdir(directory):
                continue
            for entry in os.listdir(directory):
                if entry in ("bash", "rbash") or (target / entry).exists():
                    continue
                source = os.path.join(directory, entry)
                if os.path.isfile(source) and os.access(source, os.X_OK):
                    (target / entry).symlink_to(source)
        return target


def record_event(
    store: Store,
    involved: Obj,
    reason: str,
    message: str,
    *,
    type_: str = "Normal",
    component: str = "kubelet",
) -> None:
    """Create (or bump the count of) an Event about `involved`, like the event recorder."""
    md = involved["metadata"]
    namespace = md["namespace"]
    for existing in store.query(EVENTS, namespace):
        io = existing["involvedObject"]
        same = (io.get("uid"), existing["reason"], existing["message"])
        if same == (md["uid"], reason, message):

            def bump(obj: Obj) -> None:
                obj["count"] = int(obj.get("count", 1)) + 1
                obj["lastTimestamp"] = now()

            store.modify(EVENTS, namespace, existing["metadata"]["name"], bump)
            return
    stamp = now()
    event: Obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{md['name']}.{secrets.token_hex(8)}",
            "namespace": namespace,
            "uid": secrets.token_hex(16),
            "creationTimestamp": stamp,
        },
        "involvedObject": {
            "kind": involved.get("kind", ""),
            "namespace": namespace,
            "name": md["name"],
            "uid": md["uid"],
            "apiVersion": involved.get("apiVersion", "v1"),
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": type_,
        "reportingComponent": component,
        "reportingInstance": "",
    }
    store.create(EVENTS, event)
