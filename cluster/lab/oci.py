"""OCI image archives written by hand: what `ctr images import` loads without a registry.

The lab's nodes pull nothing, so every image they run is imported from a file. An image
layout (https://github.com/opencontainers/image-spec/blob/main/image-layout.md) is a tar of

    oci-layout                      {"imageLayoutVersion": "1.0.0"}
    index.json                      one manifest descriptor, annotated with the image's name
    blobs/sha256/<hex>              the config, the manifest and each layer, named by digest

containerd names the imported image after the descriptor's `io.containerd.image.name`
annotation, so the name is written there in full (`docker.io/library/x:1`, not `x:1`: the
CRI plugin looks images up by their normalised reference). Layers are stored uncompressed:
importing skips a gunzip, and the archives live only in the local cache.

Everything here is deterministic (fixed mtimes, owners and order), so the same inputs give
the same digests, and a layer file of any size is streamed, never read into memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
# The epoch as every timestamp: archives are reproducible, and the cache key says when they
# are stale, not a date.
EPOCH = 0


@dataclass(frozen=True)
class File:
    """One regular file of a layer built from bytes (a static binary, a small config file)."""

    data: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def sha256_of_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return "sha256:" + hashlib.file_digest(stream, "sha256").hexdigest()


def layer_tar(files: Mapping[str, File]) -> bytes:
    """An uncompressed layer holding `files` (absolute paths) and their parent directories."""
    directories = sorted({parent for path in files for parent in _parents(path)})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in directories:
            tar.addfile(_info(directory, tarfile.DIRTYPE, mode=0o755))
        for path in sorted(files):
            item = files[path]
            info = _info(path.lstrip("/"), tarfile.REGTYPE, mode=item.mode, size=len(item.data))
            info.uid, info.gid = item.uid, item.gid
            tar.addfile(info, io.BytesIO(item.data))
    return buffer.getvalue()


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _info(name: str, kind: bytes, *, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, EPOCH
    info.uname = info.gname = ""
    return info


def image_config(*, layers: Sequence[Path], config: Mapping[str, object]) -> dict[str, object]:
    """The image config: runtime settings (`config`: Entrypoint, Env, User, ...) and the
    uncompressed digests of the layers (equal to the blob digests: nothing is compressed)."""
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [sha256_of_file(layer) for layer in layers]},
    }


def write_archive(
    out: Path, *, reference: str, layers: Sequence[Path], config: Mapping[str, object]
) -> str:
    """Write the image layout of one image to the tar `out`; returns the manifest digest.

    `reference` is the full name containerd gives the image on import; `layers` are
    uncompressed layer tars, lowest first.
    """
    config_blob = _json_bytes(image_config(layers=layers, config=config))
    layer_descriptors = [
        Descriptor(MEDIA_LAYER, sha256_of_file(path), path.stat().st_size) for path in layers
    ]
    config_descriptor = Descriptor(MEDIA_CONFIG, _sha256(config_blob), len(config_blob))
    manifest_blob = _json_bytes({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [layer.to_json() for layer in layer_descriptors],
    })
    manifest = Descriptor(MEDIA_MANIFEST, _sha256(manifest_blob), len(manifest_blob))
    tag = reference.rsplit(":", 1)[-1] if ":" in reference.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            **manifest.to_json(),
            "annotations": {ANNOTATION_CONTAINERD_NAME: reference, ANNOTATION_REF_NAME: tag},
        }],
    }
    with tarfile.open(out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", _json_bytes({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", _json_bytes(index))
        tar.addfile(_info("blobs", tarfile.DIRTYPE, mode=0o755))
        tar.addfile(_info("blobs/sha256", tarfile.DIRTYPE, mode=0o755))
        _add_bytes(tar, _blob_name(config_descriptor), config_blob)
        _add_bytes(tar, _blob_name(manifest), manifest_blob)
        for path, descriptor in zip(layers, layer_descriptors, strict=True):
            info = _info(_blob_name(descriptor), tarfile.REGTYPE, mode=0o644, size=descriptor.size)
            with open(path, "rb") as stream:
                tar.addfile(info, stream)
    return manifest.digest


def _blob_name(descriptor: Descriptor) -> str:
    return "blobs/sha256/" + descriptor.digest.removeprefix("sha256:")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, tarfile.REGTYPE, mode=0o644, size=len(data)), io.BytesIO(data))


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
