"""What of an action's tree travels into the pod (app/runners/kubernetes/steps.py): everything
but `.git`, with symbolic links kept as links, so a link in an action's repository can never
copy a file of the executor's host into a build's pod."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from app.runners.kubernetes.steps import _tar_gz


def test_the_tree_is_tarred_without_git_and_without_following_links(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the executor's secret")
    (tmp_path / "host-dir").mkdir()
    (tmp_path / "host-dir" / "inside.txt").write_text("also the executor's")
    tree = tmp_path / "action"
    (tree / "dist").mkdir(parents=True)
    (tree / "dist" / "index.js").write_text("console.log('hi')\n")
    (tree / "dist" / "index.js").chmod(0o755)
    (tree / "action.yml").write_text("runs: {using: node20, main: dist/index.js}\n")
    (tree / ".git").mkdir()
    (tree / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tree / "leak").symlink_to(secret)
    (tree / "node_modules").symlink_to(tmp_path / "host-dir")
    (tree / "main.js").symlink_to("dist/index.js")

    with tarfile.open(fileobj=io.BytesIO(_tar_gz(tree)), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        contents = {
            name: handle.read()
            for name, m in members.items()
            if m.isfile() and (handle := tar.extractfile(m)) is not None
        }
    assert set(members) == {
        "action.yml",
        "dist",
        "dist/index.js",
        "leak",
        "node_modules",
        "main.js",
    }
    assert members["leak"].issym() and members["leak"].linkname == str(secret)
    assert members["node_modules"].issym()
    assert members["main.js"].issym() and members["main.js"].linkname == "dist/index.js"
    assert members["dist/index.js"].mode & 0o111
    assert contents == {
        "action.yml": b"runs: {using: node20, main: dist/index.js}\n",
        "dist/index.js": b"console.log('hi')\n",
    }
