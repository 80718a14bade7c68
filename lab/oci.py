"""OCI image layouts of the lab mirror's images, written from files on the host: no container engine, no registry.

One image is one gzip layer (a tar of the files the image needs, owned by root, with fixed timestamps, so the same
files give the same digest) plus a config naming linux/amd64 (containerd picks images by platform), the entrypoint,
the environment and the user. `skopeo copy oci:<layout>:<tag> docker://<registry>/<name>:<tag>` pushes a layout.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = 0  # every file's mtime in a layer: layers are reproducible


@dataclass(frozen=True)
class ImageSpec:
    """What one image holds: `files` maps a path inside the image to a host file (copied with its mode);
    `tree` is a host directory taken whole as the image's root first (kube-proxy's Debian base)."""

    name: str  # repository path under the mirror's image repository, e.g. kube-apiserver
    tag: str
    files: Mapping[str, Path] = field(default_factory=dict)
    tree: Path | None = None
    entrypoint: Sequence[str] = ()
    user: str = ""
    directories: Sequence[str] = ("tmp",)  # created empty (mode 1777 for tmp, 755 otherwise)


def write_layout(spec: ImageSpec, layout: Path) -> str:
    """Write `spec` as an OCI image layout at `layout` (created), its tag in index.json. Returns the manifest digest."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    layer_tar = _layer_tar(spec)
    layer_gz = gzip.compress(layer_tar, compresslevel=6, mtime=EPOCH)  # level 9 triples the time for 2 % less
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [PATH_ENV],
            **({"Entrypoint": list(spec.entrypoint)} if spec.entrypoint else {}),
            **({"User": spec.user} if spec.user else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
        "history": [{"created_by": f"kubeadm-libvirt lab mirror: {spec.name}:{spec.tag}"}],
    }
    config_bytes = _json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": _descriptor(blobs, MEDIA_CONFIG, config_bytes),
        "layers": [_descriptor(blobs, MEDIA_LAYER, layer_gz)],
    }
    manifest_descriptor = _descriptor(blobs, MEDIA_MANIFEST, _json(manifest))
    manifest_descriptor["annotations"] = {"org.opencontainers.image.ref.name": spec.tag}
    (layout / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_bytes(_json({"schemaVersion": 2, "manifests": [manifest_descriptor]}))
    return manifest_descriptor["digest"]


def _layer_tar(spec: ImageSpec) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if spec.tree is not None:
            for path in sorted(spec.tree.rglob("*")):
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(spec.tree)))
                _normalize(info)
                if info.isreg():
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
        in_tree = set() if spec.tree is None else {str(p.relative_to(spec.tree)) for p in spec.tree.rglob("*")}
        directories = list(spec.directories)
        for inside in sorted(spec.files):
            directories += [str(parent) for parent in reversed(Path(inside).parents) if str(parent) != "."]
        for directory in dict.fromkeys(directories):  # each once, parents first
            if directory in in_tree:
                continue
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            _normalize(info)
            tar.addfile(info)
        for inside in sorted(spec.files):
            source = spec.files[inside]
            info = tar.gettarinfo(str(source), arcname=inside)
            _normalize(info)
            with source.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


def _normalize(info: tarfile.TarInfo) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = EPOCH


def _descriptor(blobs: Path, media_type: str, content: bytes) -> dict:
    digest = hashlib.sha256(content).hexdigest()
    (blobs / digest).write_bytes(content)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(content)}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
