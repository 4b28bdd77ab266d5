"""Build OCI image layouts in pure Python and push them to registries with skopeo.

Layers are gzip'd tars holding one file of deterministic pseudo-random bytes, so the same
arguments always produce the same digests, and different ``seed``/platform give distinct blobs.
Layers are streamed to disk while hashing, so large layers do not need much memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "INDEX_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "Layout",
    "build_layout",
    "inspect_raw",
    "push",
]

OCI_LAYOUT_VERSION = "1.0.0"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"

_CHUNK = 1024 * 1024


@dataclass
class Layout:
    """Description of an OCI image layout written by :func:`build_layout`.

    Platform keys are ``"os/arch"`` (or ``"os/arch/variant"``). Digests are ``sha256:<hex>``.
    ``manifest_digests`` are the OCI manifests as written; pushing with ``v2s2=True`` makes
    skopeo rewrite the manifests, so their digests change (blob digests do not).
    """

    path: Path
    manifest_digests: dict[str, str]
    index_digest: str | None
    layer_digests: dict[str, list[str]]
    blob_sizes: dict[str, int]
    config_digests: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Digest of the top-level object: the index if any, else the single manifest."""
        if self.index_digest is not None:
            return self.index_digest
        return next(iter(self.manifest_digests.values()))

    @property
    def platforms(self) -> list[str]:
        """Platform strings in build order."""
        return list(self.manifest_digests)

    def blob_path(self, digest: str) -> Path:
        """Path of a blob file inside the layout."""
        algo, _, hex_ = digest.partition(":")
        return self.path / "blobs" / algo / hex_

    def blob_bytes(self, digest: str) -> bytes:
        """Content of a blob (beware: layers can be large)."""
        return self.blob_path(digest).read_bytes()


class _RandomReader:
    """File-like object producing ``size`` deterministic pseudo-random bytes."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self._rng = rng
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            n = self._left
        self._left -= n
        return self._rng.randbytes(n) if n else b""


class _LayerWriter:
    """Write sink hashing the uncompressed tar and writing/hashing its gzip'd form."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        # wbits=31: gzip container with mtime 0 (deterministic). Level 0 (stored deflate
        # blocks) is a valid gzip stream and 10x faster; random data would not shrink anyway.
        self._gz = zlib.compressobj(0, zlib.DEFLATED, 31)
        self.diff_hash = hashlib.sha256()
        self.blob_hash = hashlib.sha256()
        self.size = 0

    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.blob_hash.update(data)
            self.size += len(data)

    def write(self, data: bytes) -> int:
        self.diff_hash.update(data)
        self._emit(self._gz.compress(data))
        return len(data)

    def close(self) -> None:
        self._emit(self._gz.flush())


def _platform_key(os_name: str, arch: str) -> str:
    return f"{os_name}/{arch}"


def _platform_obj(os_name: str, arch: str) -> dict[str, str]:
    architecture, _, variant = arch.partition("/")
    obj = {"architecture": architecture, "os": os_name}
    if variant:
        obj["variant"] = variant
    return obj


def _write_json_blob(blobs: Path, obj: Any, sizes: dict[str, int]) -> tuple[str, int]:
    data = json.dumps(obj, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    sizes[digest] = len(data)
    return digest, len(data)


def _write_layer(blobs: Path, rng: random.Random, size: int, name: str) -> tuple[str, str, int]:
    """Write one gzip'd tar layer; return (blob digest, diff_id, compressed size)."""
    tmp = blobs / f".tmp-{os.getpid()}-{name}"
    with tmp.open("wb") as out:
        writer = _LayerWriter(out)
        with tarfile.open(
            fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT, copybufsize=_CHUNK
        ) as tar:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, _RandomReader(rng, size))
        writer.close()
    digest = "sha256:" + writer.blob_hash.hexdigest()
    tmp.replace(blobs / writer.blob_hash.hexdigest())
    return digest, "sha256:" + writer.diff_hash.hexdigest(), writer.size


def build_layout(
    dest: Path,
    *,
    platforms: list[tuple[str, str]] | None = None,
    layer_sizes: list[int] | None = None,
    seed: int = 0,
) -> Layout:
    """Write an OCI image layout at ``dest`` and describe it.

    ``platforms`` defaults to ``[("linux", "amd64")]`` and ``layer_sizes`` to ``[4096]``
    (uncompressed payload bytes per layer). With one platform ``index.json`` points at the
    image manifest; with several it points at an OCI image index listing each platform.
    An ``arch`` like ``"arm/v7"`` sets the platform variant.
    """
    platforms = [("linux", "amd64")] if platforms is None else platforms
    layer_sizes = [4096] if layer_sizes is None else layer_sizes
    if not platforms:
        raise ValueError("at least one platform is required")
    dest = Path(dest)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}))

    sizes: dict[str, int] = {}
    manifests: dict[str, str] = {}
    configs: dict[str, str] = {}
    layers_by_platform: dict[str, list[str]] = {}
    descriptors: list[dict[str, Any]] = []
    for os_name, arch in platforms:
        key = _platform_key(os_name, arch)
        layer_descs: list[dict[str, Any]] = []
        diff_ids: list[str] = []
        for i, size in enumerate(layer_sizes):
            rng = random.Random(f"entrepot-test/{seed}/{key}/{i}/{size}")
            # The file name embeds seed and platform so even empty layers are distinct.
            name = f"{key.replace('/', '-')}-seed{seed}-layer{i}.bin"
            digest, diff_id, blob_size = _write_layer(blobs, rng, size, name)
            sizes[digest] = blob_size
            diff_ids.append(diff_id)
            layer_descs.append({"mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": blob_size})
        config = {
            "created": "1970-01-01T00:00:00Z",
            **_platform_obj(os_name, arch),
            "config": {"Cmd": ["/bin/sh"], "Labels": {"seed": str(seed)}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "build_layout"}]
            * len(diff_ids),
        }
        config_digest, config_size = _write_json_blob(blobs, config, sizes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layer_descs,
        }
        manifest_digest, manifest_size = _write_json_blob(blobs, manifest, sizes)
        manifests[key] = manifest_digest
        configs[key] = config_digest
        layers_by_platform[key] = [d["digest"] for d in layer_descs]
        descriptors.append(
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": _platform_obj(os_name, arch),
            }
        )

    index_digest: str | None = None
    if len(descriptors) == 1:
        top = {k: v for k, v in descriptors[0].items() if k != "platform"}
    else:
        image_index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": descriptors}
        index_digest, index_size = _write_json_blob(blobs, image_index, sizes)
        top = {"mediaType": INDEX_MEDIA_TYPE, "digest": index_digest, "size": index_size}
    root_index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [top]}
    (dest / "index.json").write_text(json.dumps(root_index, separators=(",", ":")))
    return Layout(
        path=dest,
        manifest_digests=manifests,
        index_digest=index_digest,
        layer_digests=layers_by_platform,
        blob_sizes=sizes,
        config_digests=configs,
    )


def _is_index_layout(layout: Path) -> bool:
    root = json.loads((Path(layout) / "index.json").read_text())
    return any(m.get("mediaType") == INDEX_MEDIA_TYPE for m in root.get("manifests", []))


def _run_skopeo(args: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    cmd = ["skopeo", "--insecure-policy", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"skopeo timed out after {timeout}s: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"skopeo failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc


def _docker_ref(ref: str) -> str:
    return ref if ref.startswith("docker://") else f"docker://{ref}"


def push(
    layout: Path | Layout,
    dest: str,
    *,
    v2s2: bool = False,
    creds: str | None = None,
    timeout: float = 300.0,
) -> None:
    """Copy the image in the OCI layout at ``layout`` to ``dest`` (``HOST:PORT/NAME:TAG``).

    Image indexes are copied with ``--all``. ``v2s2=True`` stores Docker schema 2 media types
    (an index becomes a Docker manifest list; all manifest digests change, blob digests
    do not). ``creds`` is ``"user:password"``.
    Raises ``RuntimeError`` with skopeo's stderr on failure.
    """
    layout = Path(layout.path if isinstance(layout, Layout) else layout)
    args = ["copy", "--quiet", "--dest-tls-verify=false"]
    if _is_index_layout(layout):
        args.append("--all")
    if v2s2:
        args += ["--format", "v2s2"]
    if creds is not None:
        args += ["--dest-creds", creds]
    args += [f"oci:{layout}", _docker_ref(dest)]
    _run_skopeo(args, timeout)


def inspect_raw(ref: str, *, creds: str | None = None, timeout: float = 60.0) -> bytes:
    """Return the raw manifest of ``ref`` (``HOST:PORT/NAME:TAG``) via ``skopeo inspect --raw``."""
    args = ["inspect", "--raw", "--tls-verify=false"]
    if creds is not None:
        args += ["--creds", creds]
    args.append(_docker_ref(ref))
    return _run_skopeo(args, timeout).stdout
