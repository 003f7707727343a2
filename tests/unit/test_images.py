"""Lab images without a registry: the OCI archive writer and the keys of the image cache.

The archives themselves are built by `make provision` and imported into a real containerd by
tests/lab/test_images.py; these tests pin what containerd's importer relies on (an image
layout whose every blob is named by its digest) and what decides a rebuild (the key).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from raylb.cluster.lab import image_build, images, oci
from raylb.errors import PermanentError
from tests.conftest import REPO

REFERENCE = "raylb.local/pause:1"


def blobs_of(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers() if member.isfile()
        }


def write_sample(tmp_path: Path, name: str = "image.tar") -> Path:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(oci.layer_tar({
        "/pause": oci.File(b"\x7fELF not really", mode=0o755),
        "/etc/lab/motd": oci.File(b"hello\n"),
    }))
    out = tmp_path / name
    oci.write_archive(out, reference=REFERENCE, layers=[layer], config={"Entrypoint": ["/pause"]})
    return out


def test_an_archive_is_an_image_layout_whose_blobs_are_named_by_their_digests(
    tmp_path: Path,
) -> None:
    files = blobs_of(write_sample(tmp_path))
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    blobs = {name: data for name, data in files.items() if name.startswith("blobs/sha256/")}
    assert set(files) == {"oci-layout", "index.json", *blobs}
    for name, data in blobs.items():
        assert name == "blobs/sha256/" + hashlib.sha256(data).hexdigest()

    def blob(descriptor: dict[str, object]) -> bytes:
        data = blobs["blobs/sha256/" + str(descriptor["digest"]).removeprefix("sha256:")]
        assert len(data) == descriptor["size"]
        return data

    (entry,) = json.loads(files["index.json"])["manifests"]
    assert entry["mediaType"] == oci.MEDIA_MANIFEST
    assert entry["annotations"] == {
        "io.containerd.image.name": REFERENCE, "org.opencontainers.image.ref.name": "1",
    }
    manifest = json.loads(blob(entry))
    assert manifest["schemaVersion"] == 2 and manifest["config"]["mediaType"] == oci.MEDIA_CONFIG
    config = json.loads(blob(manifest["config"]))
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == oci.MEDIA_LAYER  # uncompressed: its digest is its diff_id
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["config"] == {"Entrypoint": ["/pause"]}
    with tarfile.open(fileobj=io.BytesIO(blob(layer))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["etc", "etc/lab", "etc/lab/motd", "pause"]
    assert members["pause"].mode == 0o755 and members["pause"].isfile()
    assert members["etc/lab"].isdir() and members["etc/lab/motd"].mode == 0o644


def test_the_same_inputs_give_the_same_archive_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert write_sample(tmp_path / "a").read_bytes() == write_sample(tmp_path / "b").read_bytes()


@pytest.mark.parametrize(
    ("reference", "tag"),
    [("raylb.local/pause:1", "1"), ("docker.io/library/raylb:0.1.0", "0.1.0"),
     ("localhost:5000/backend", "latest")],
)
def test_the_ref_name_annotation_is_the_tag(tmp_path: Path, reference: str, tag: str) -> None:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(oci.layer_tar({"/x": oci.File(b"x")}))
    oci.write_archive(tmp_path / "i.tar", reference=reference, layers=[layer], config={})
    (entry,) = json.loads(blobs_of(tmp_path / "i.tar")["index.json"])["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == tag
    assert entry["annotations"]["io.containerd.image.name"] == reference


@pytest.mark.parametrize(
    ("dockerfile", "sources"),
    [
        ("FROM x\nCOPY a b /dst/\n", ["a", "b"]),
        ("FROM x\nCOPY --chown=ray:users a /dst\n", ["a"]),
        ("FROM x\ncopy --chown=ray:users --chmod=644 a /dst\n", ["a"]),
        ('FROM x\nCOPY ["a b", "c", "/dst/"]\n', ["a b", "c"]),
        ("FROM x\nCOPY a \\\n  b /dst/\n", ["a", "b"]),
        ("FROM x\nADD a.tar /\n", ["a.tar"]),
        ("FROM x AS build\nFROM y\nCOPY --from=build /out /out\n", []),
        ("FROM x\n# COPY secret /\nRUN cp a b\n", []),
    ],
)
def test_dockerfile_sources_are_what_copy_and_add_read_from_the_context(
    dockerfile: str, sources: list[str]
) -> None:
    assert image_build.dockerfile_sources(dockerfile) == sources


def test_the_users_dockerfile_copies_the_package_and_its_metadata() -> None:
    text = (REPO / images.DOCKERFILE).read_text()
    assert image_build.dockerfile_sources(text) == [
        "pyproject.toml", "setup.py", "README.md", "raylb", "actors", "cluster",
    ]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small checkout: the real Dockerfile and a file in every place it copies from."""
    root = tmp_path / "repo"
    (root / images.DOCKERFILE).parent.mkdir(parents=True)
    shutil.copyfile(REPO / images.DOCKERFILE, root / images.DOCKERFILE)
    for name in ("pyproject.toml", "setup.py", "README.md", "raylb/cli.py",
                 "actors/speaker/main.py", "cluster/lab/images.py", "tests/test_x.py",
                 "notebooks/n.ipynb"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# {name}\n")
    return root


def raylb_key(repo: Path) -> str:
    return images.cache_keys(repo)["raylb"]


@pytest.mark.parametrize(
    "change",
    ["raylb/cli.py", "actors/speaker/main.py", "cluster/lab/new_module.py", "README.md",
     "deploy/kuberay/Dockerfile", "setup.py"],
)
def test_a_change_to_what_the_dockerfile_copies_changes_the_raylb_key(
    repo: Path, change: str
) -> None:
    keys = images.cache_keys(repo)
    with open(repo / change, "a") as stream:
        stream.write("# changed\n")
    changed = images.cache_keys(repo)
    assert changed["raylb"] != keys["raylb"]
    assert {k: v for k, v in changed.items() if k != "raylb"} == {
        k: v for k, v in keys.items() if k != "raylb"
    }, "only the raylb image depends on the repository"


@pytest.mark.parametrize(
    "change",
    ["tests/test_x.py", "notebooks/n.ipynb", "Makefile", "raylb/__pycache__/cli.cpython-311.pyc",
     "cluster/lab/stray.pyc"],
)
def test_files_the_image_does_not_contain_leave_the_key_alone(repo: Path, change: str) -> None:
    before = raylb_key(repo)
    (repo / change).parent.mkdir(parents=True, exist_ok=True)
    (repo / change).write_text("anything\n")
    assert raylb_key(repo) == before


def test_the_exec_bit_of_a_copied_file_is_part_of_the_key(repo: Path) -> None:
    before = raylb_key(repo)
    (repo / "raylb/cli.py").chmod(0o755)
    assert raylb_key(repo) != before


def test_the_ignored_paths_are_the_ones_the_dockerignore_names() -> None:
    patterns = {
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert patterns == {f"**/{name}" for name in image_build.IGNORED_DIRS} | {
        f"**/*{suffix}" for suffix in image_build.IGNORED_SUFFIXES
    }


def test_a_missing_copy_source_is_named(repo: Path) -> None:
    shutil.rmtree(repo / "actors")
    with pytest.raises(PermanentError, match="COPY source 'actors' does not exist"):
        images.cache_keys(repo)


def test_the_base_key_follows_the_ray_version() -> None:
    assert image_build.base_key("2.60.0") != image_build.base_key("2.61.0")
    assert image_build.base_key("2.60.0") == image_build.base_key("2.60.0")


def test_images_in_the_cache_are_returned_without_building(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYLB_IMAGES_CACHE", str(tmp_path / "cache"))

    def no_build(*args: object) -> None:
        raise AssertionError("a cached image was rebuilt")

    monkeypatch.setattr(images, "_build", no_build)
    keys = images.cache_keys(repo)
    for name, key in keys.items():
        folder = tmp_path / "cache" / f"{name}-{key}"
        folder.mkdir(parents=True)
        (folder / images.IMAGE_FILE).write_bytes(b"archive")
    found = images.ensure_images(lambda line: None, repo=repo)
    assert {name: image.key for name, image in found.items()} == keys
    assert found["raylb"].reference == "docker.io/library/raylb:0.1.0"
    assert found["pause"].reference == "raylb.local/pause:1"
    assert found["ray-base"].reference == f"raylb.local/ray-base:{images.ray_version()}"
    assert all(image.archive.read_bytes() == b"archive" for image in found.values())


def test_a_checkout_without_the_dockerfile_is_refused_by_path(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="deploy/kuberay/Dockerfile not found"):
        images.ensure_images(lambda line: None, repo=tmp_path)
