"""The images the in-cluster lab runs, built here without a registry, cached by their inputs.

| name       | reference (as containerd lists it after import) | built from                     |
|------------|--------------------------------------------------|--------------------------------|
| `pause`    | raylb.local/pause:1                              | a static Go binary, one layer   |
| `backend`  | raylb.local/backend:1                            | a static Go binary, one layer   |
| `ray-base` | raylb.local/ray-base:<ray>                       | Debian rootfs + venv with Ray   |
| `raylb`    | docker.io/library/raylb:<raylb>                  | deploy/kuberay/Dockerfile       |

The raylb image is built from deploy/kuberay/Dockerfile itself, the file users build, with
its base swapped by build argument for `ray-base`: a Debian bookworm rootfs (mmdebstrap,
Python 3.11) with a venv holding `ray[default]` at the version raylb's own venv runs,
installed from a wheelhouse downloaded once. It looks like rayproject/ray where KubeRay's
generated commands care: user `ray` (uid 1000, group users, home /home/ray), bash, and `ray`,
`python`, `pip` on PATH, also in the login shell KubeRay starts (`/bin/bash -lc`).

containerd stores an unqualified name in full: a pod asking for `raylb:0.1.0` is served
the image named `docker.io/library/raylb:0.1.0`, so that is the name the archive carries.

Each archive sits in `~/.cache/raylb/images/<name>-<key>/image.tar` ($RAYLB_IMAGES_CACHE
overrides the root), where the key hashes every input (program sources, package lists, the
Ray version, the Dockerfile and every file it copies). A cached image costs a hash and a stat;
builds take a lock, happen in a temporary directory and are renamed into place.

    python -m raylb.cluster.lab.images      # builds what is missing, prints the archives
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from raylb.cluster.localkube.provision import find_go
from raylb.cluster.lab import image_build, oci
from raylb.cluster.lab.image_build import Progress, digest, run_logged
from raylb.cluster.lab.image_programs import BACKEND_GO, PAUSE_GO
from raylb.errors import PermanentError, RaylbError

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = Path("deploy/kuberay/Dockerfile")
# Bump when a recipe changes in a way its hashed inputs do not show.
RECIPE_VERSION = "1"

PAUSE_REFERENCE = "raylb.local/pause:1"
BACKEND_REFERENCE = "raylb.local/backend:1"
# Like Kubernetes' own pause image: no root needed to hold namespaces and reap children.
PAUSE_CONFIG = {"Entrypoint": ["/pause"], "User": "65535:65535"}
BACKEND_CONFIG = {"Entrypoint": ["/backend"], "User": "65534:65534", "Env": ["PORT=8080"]}

IMAGE_FILE = "image.tar"
INFO_FILE = "build-info.json"


@dataclass(frozen=True)
class ImageArchive:
    """One image on disk: the name containerd gives it on import, and the archive to import."""

    reference: str
    archive: Path
    key: str  # hash of every input; part of the cache path


def cache_root() -> Path:
    override = os.environ.get("RAYLB_IMAGES_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raylb" / "images"


def ray_version() -> str:
    """The Ray raylb runs with here; the in-cluster image must run the same."""
    return importlib.metadata.version("ray")


def raylb_reference() -> str:
    """deploy/kuberay/raycluster.yaml's `raylb:<version>`, as containerd names it."""
    return f"docker.io/library/raylb:{importlib.metadata.version('raylb')}"


def base_reference() -> str:
    return f"raylb.local/ray-base:{ray_version()}"


@dataclass(frozen=True)
class _Recipe:
    name: str
    reference: str
    key: str
    build: Callable[[Path, Path, Progress], dict[str, object]]  # (work dir, out tar, progress)


def _recipes(repo: Path) -> list[_Recipe]:
    base_key = digest(RECIPE_VERSION, base_reference(), image_build.base_key(ray_version()))
    base_archive = cache_root() / f"ray-base-{base_key}" / IMAGE_FILE
    raylb_key = digest(
        RECIPE_VERSION, base_key, raylb_reference(),
        image_build.copied_files_digest(repo, repo / DOCKERFILE),
    )
    return [
        _Recipe("pause", PAUSE_REFERENCE, digest(RECIPE_VERSION, PAUSE_REFERENCE, PAUSE_GO,
                                                    json.dumps(PAUSE_CONFIG)),
                lambda work, out, say: _static_image(work, out, say, "pause", PAUSE_GO,
                                                     PAUSE_REFERENCE, PAUSE_CONFIG)),
        _Recipe("backend", BACKEND_REFERENCE,
                digest(RECIPE_VERSION, BACKEND_REFERENCE, BACKEND_GO, json.dumps(BACKEND_CONFIG)),
                lambda work, out, say: _static_image(work, out, say, "backend", BACKEND_GO,
                                                     BACKEND_REFERENCE, BACKEND_CONFIG)),
        _Recipe("ray-base", base_reference(), base_key,
                lambda work, out, say: image_build.build_base(
                    work, out, say, ray=ray_version(), reference=base_reference(),
                    wheelhouse_root=cache_root())),
        _Recipe("raylb", raylb_reference(), raylb_key,
                lambda work, out, say: image_build.build_dockerfile(
                    work, out, say, repo=repo, dockerfile=repo / DOCKERFILE,
                    base_archive=base_archive, base_reference=base_reference(),
                    reference=raylb_reference())),
    ]


def cache_keys(repo: Path = REPO_ROOT) -> dict[str, str]:
    """Each image's key: the hash of its inputs (what a rebuild would differ by)."""
    return {recipe.name: recipe.key for recipe in _recipes(repo)}


def _archive(recipe: _Recipe) -> ImageArchive:
    return ImageArchive(recipe.reference, cache_root() / f"{recipe.name}-{recipe.key}" / IMAGE_FILE,
                        recipe.key)


def ensure_images(progress: Progress = print, *, repo: Path = REPO_ROOT) -> dict[str, ImageArchive]:
    """Every lab image as an archive, building what the cache lacks (in order: the base before
    the raylb image). Keys: pause, backend, ray-base, raylb."""
    if not (repo / DOCKERFILE).is_file():
        raise PermanentError(
            f"raylb image: {repo / DOCKERFILE} not found; images are built from a source checkout"
        )
    recipes = _recipes(repo)
    found = {recipe.name: _archive(recipe) for recipe in recipes}
    if all(image.archive.is_file() for image in found.values()):
        return found
    cache_root().mkdir(parents=True, exist_ok=True)
    with _exclusive(cache_root() / ".lock", progress):
        for recipe in recipes:
            if not found[recipe.name].archive.is_file():  # built while we waited for the lock?
                _build(recipe, found[recipe.name], progress)
    return found


def _build(recipe: _Recipe, image: ImageArchive, progress: Progress) -> None:
    final = image.archive.parent
    work = Path(tempfile.mkdtemp(prefix=f".build-{recipe.name}-", dir=cache_root()))
    started = time.monotonic()
    try:
        progress(f"{recipe.name}: building {recipe.reference} (log {work / 'build.log'})")
        details = recipe.build(work, work / IMAGE_FILE, progress)
        info = {
            "reference": recipe.reference, "key": recipe.key,
            "size_bytes": (work / IMAGE_FILE).stat().st_size,
            "build_wall_s": round(time.monotonic() - started, 1), **details,
        }
        (work / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        cleanup_started = time.monotonic()
        for leftover in work.iterdir():  # keep the archive, its record and the log only
            if leftover.name not in (IMAGE_FILE, INFO_FILE, "build.log"):
                _remove(leftover)  # buildah's vfs store: a full copy per layer, slow to delete
        cleanup_s = round(time.monotonic() - cleanup_started, 1)
        if final.exists():  # a broken earlier result: we hold the lock, so replace it
            shutil.rmtree(final)
        os.rename(work, final)
    except BaseException:
        _remove(work)
        raise
    progress(f"{recipe.name}: {info['size_bytes'] / 1e6:.0f} MB in {info['build_wall_s']} s "
             f"(+{cleanup_s} s removing the work files)")
    for stale in cache_root().glob(f"{recipe.name}-*"):  # earlier keys of the same image
        if stale != final and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def _exclusive(lock_path: Path, progress: Progress) -> Iterator[None]:
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another image build (lock {lock_path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _static_image(work: Path, out: Path, progress: Progress, program: str, source: str,
                  reference: str, config: dict[str, object]) -> dict[str, object]:
    """A one-layer image holding one static Go binary at /<program>."""
    binary = image_build.go_static_binary(work, program, source, go=find_go(progress),
                                          progress=progress)
    layer = work / "layer.tar"
    layer.write_bytes(oci.layer_tar({f"/{program}": oci.File(binary.read_bytes(), mode=0o755)}))
    manifest = oci.write_archive(out, reference=reference, layers=[layer], config=config)
    return {"manifest": manifest, "binary_bytes": binary.stat().st_size}


def import_into(image: ImageArchive | Path, *, containerd_socket: Path,
                namespace: str = "k8s.io") -> None:
    """Import one archive into a containerd (its CRI namespace by default) and unpack it for
    the default snapshotter, so the kubelet can start it without pulling."""
    archive = image.archive if isinstance(image, ImageArchive) else image
    if not archive.is_file():
        raise PermanentError(f"image archive {archive} does not exist (run ensure_images first)")
    if not containerd_socket.is_socket():  # ctr would wait 10 s for it, then say "timeout"
        raise PermanentError(f"no containerd listens at {containerd_socket}: not a socket")
    done = subprocess.run(
        ["ctr", "--address", str(containerd_socket), "--namespace", namespace,
         "images", "import", str(archive)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise PermanentError(
            f"ctr images import {archive} into {containerd_socket} failed "
            f"(exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )


def main() -> int:
    def say(line: str) -> None:
        print(f"[images] {line}", flush=True)

    started = time.monotonic()
    try:
        images = ensure_images(say)
    except RaylbError as exc:
        say(f"FAILED: {exc}")
        return 1
    for name, image in images.items():
        size_mb = image.archive.stat().st_size / 1e6
        say(f"{name:<9} {image.reference:<40} {size_mb:7.0f} MB  {image.archive}")
    say(f"ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
