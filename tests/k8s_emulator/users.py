"""Who a container's processes run as, what their volumes look like, and the namespaces the
emulator gives them: the parts of a real node that a CI pod notices.

- **Users.** Each process of a container (PID 1 and every exec) runs with the container's
  effective `securityContext`: `runAsUser` (else the image's user, root unless the test says
  otherwise), `runAsGroup` (else 0, as containerd does for a uid the image does not know), and
  the supplementary groups `fsGroup` + `supplementalGroups`. `runAsNonRoot` is enforced like the
  kubelet's `verifyRunAsNonRoot` (CreateContainerConfigError). This needs root: an emulator not
  running as root says so (`STRICT_USERS_UNAVAILABLE`) and runs everything as its own user.
- **Volumes.** An emptyDir is created `0777`; with an `fsGroup` the kubelet's
  `SetVolumeOwnership` makes it `root:<fsGroup>` with the setgid bit (`2777`), else it stays
  `root:root 0777`. The container's own filesystem (its `/`, the default HOME of a uid the image
  does not know) belongs to root and is not writable by anyone else.
- **Namespaces.** Every process gets its own mount and UTS namespace: `/etc/hosts` is the pod's
  hosts file (the kubelet-managed one: localhost, the pod's hostname, `hostAliases`) and the
  hostname is the pod's name. Pods with more than one container also get their own network
  namespace (loopback only, shared by the pod's containers, like the pod sandbox): a service
  sidecar listening on 127.0.0.1 is reached by the pod's steps only, never by another pod or by
  a service of the host. Pods with a single container stay on the node's network so they can
  reach the outside, as cluster pods can.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.k8s_emulator.errors import ConfigError

Obj = dict[str, Any]

STRICT_USERS = os.geteuid() == 0
STRICT_USERS_UNAVAILABLE: str | None = (
    None
    if STRICT_USERS
    else (
        f"strict uid mode is unavailable: the emulator runs as uid {os.geteuid()}, not root, so "
        "pod processes run as that user, emptyDirs are not chowned and there is no per-pod "
        "/etc/hosts or network namespace"
    )
)

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_SIOCSIFFLAGS = 0x8914
_IFF_UP, _IFF_LOOPBACK, _IFF_RUNNING = 0x1, 0x8, 0x40
_libc = ctypes.CDLL(None, use_errno=True) if STRICT_USERS else None


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]
    fs_group: int | None = None


def effective(spec: Obj, container: Obj, key: str) -> Any:
    """A securityContext field: the container's, else the pod's."""
    own = container.get("securityContext") or {}
    return own[key] if key in own else (spec.get("securityContext") or {}).get(key)


def identity_for(spec: Obj, container: Obj, image_user: int | str, pod: str) -> Identity:
    """The container's processes' ids; raises ConfigError where the kubelet refuses to start it
    (`verifyRunAsNonRoot`, pkg/kubelet/kuberuntime/security_context_others.go)."""
    user = effective(spec, container, "runAsUser")
    name = container.get("name", "")
    if effective(spec, container, "runAsNonRoot"):
        if user is not None:
            if int(user) == 0:
                raise ConfigError(
                    f'container\'s runAsUser breaks non-root policy (pod: "{pod}", '
                    f"container: {name})"
                )
        elif isinstance(image_user, str):
            raise ConfigError(
                f"container has runAsNonRoot and image has non-numeric user ({image_user}), "
                f'cannot verify user is non-root (pod: "{pod}", container: {name})'
            )
        elif image_user == 0:
            raise ConfigError(
                f'container has runAsNonRoot and image will run as root (pod: "{pod}", '
                f"container: {name})"
            )
    uid = int(user) if user is not None else (image_user if isinstance(image_user, int) else 0)
    group = effective(spec, container, "runAsGroup")
    gid = int(group) if group is not None else 0
    pod_sc = spec.get("securityContext") or {}
    fs_group = pod_sc.get("fsGroup")
    groups = [gid]
    for extra in [fs_group, *(pod_sc.get("supplementalGroups") or [])]:
        if extra is not None and int(extra) not in groups:
            groups.append(int(extra))
    return Identity(uid, gid, tuple(groups), int(fs_group) if fs_group is not None else None)


def own_volume(path: Path, fs_group: int | None) -> None:
    """An emptyDir as the kubelet leaves it: 0777, or root:<fsGroup> 2777 with an fsGroup."""
    if not STRICT_USERS:
        return
    os.chown(path, 0, fs_group if fs_group is not None else 0)
    mode = 0o777 | (stat.S_ISGID if fs_group is not None else 0)
    os.chmod(path, mode)


def own_secret_file(path: Path, fs_group: int | None) -> None:
    """Secret volume files: root-owned 0644 (defaultMode), group fsGroup when there is one."""
    if STRICT_USERS:
        os.chown(path, 0, fs_group if fs_group is not None else 0)
        os.chmod(path, 0o644)


def root_owned(path: Path, mode: int = 0o755) -> None:
    """Part of the image's filesystem: root's, writable by root only."""
    if STRICT_USERS:
        os.chown(path, 0, 0)
        os.chmod(path, mode)


def hosts_file(path: Path, hostname: str, pod_ip: str | None, aliases: list[Obj]) -> Path:
    """The kubelet-managed /etc/hosts of a pod (its format, including hostAliases)."""
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if pod_ip:
        lines.append(f"{pod_ip}\t{hostname}")
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for alias in aliases:
            lines.append(f"{alias.get('ip', '')}\t" + "\t".join(alias.get("hostnames") or []))
    path.write_text("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


@dataclass(frozen=True)
class Sandbox:
    """What a process of a container is started in (all of it applied only as root)."""

    identity: Identity | None = None
    hostname: str | None = None
    hosts: Path | None = None
    netns_pid: int | None = None  # the pod's sandbox process, whose network namespace to join


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def preexec_for(sandbox: Sandbox) -> Callable[[], None] | None:
    """The child-side setup (runs after fork, before exec): namespaces, mounts, then the ids."""
    libc = _libc
    if libc is None:
        return None
    ident = sandbox.identity
    hosts = str(sandbox.hosts).encode() if sandbox.hosts else None
    hostname = (sandbox.hostname or "").encode()[:64]
    netns = f"/proc/{sandbox.netns_pid}/ns/net" if sandbox.netns_pid else None

    def setup() -> None:
        if netns is not None:
            fd = os.open(netns, os.O_RDONLY)
            _check(libc.setns(fd, _CLONE_NEWNET), "setns")
            os.close(fd)
        _check(libc.unshare(_CLONE_NEWNS | _CLONE_NEWUTS), "unshare")
        _check(libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None), "mount private")
        if hosts is not None:
            _check(libc.mount(hosts, b"/etc/hosts", None, _MS_BIND, None), "mount /etc/hosts")
        if hostname:
            _check(libc.sethostname(hostname, len(hostname)), "sethostname")
        if ident is not None:
            os.setgroups(list(ident.groups))
            os.setgid(ident.gid)
            os.setuid(ident.uid)

    return setup


def _new_network() -> None:
    """In the pod sandbox's child: a network namespace of its own with loopback up."""
    assert _libc is not None
    _check(_libc.unshare(_CLONE_NEWNET), "unshare net")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = _IFF_UP | _IFF_LOOPBACK | _IFF_RUNNING
        fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags))


def sandbox_preexec() -> Callable[[], None] | None:
    """For the pod's sandbox ("pause") process: None when namespaces are unavailable."""
    return _new_network if STRICT_USERS else None
