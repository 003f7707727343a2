"""Provisioning: which binaries are used, the generated wrapper module, and build exclusivity.

The real build is exercised by `make provision` and by every session of tests/kube (the
fixture provisions first); these tests pin the rules around it with fake binaries.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from raylb.cluster.localkube import provision

UPSTREAM_GOMOD = """\
module k8s.io/kubernetes

go 1.24.0

require (
\tk8s.io/api v0.0.0
\tgithub.com/spf13/cobra v1.9.1
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tk8s.io/cri-client => ./staging/src/k8s.io/cri-client
)
"""


def test_wrapper_gomod_replaces_each_staging_module_with_its_published_twin() -> None:
    text = provision.kubernetes_wrapper_gomod(UPSTREAM_GOMOD, "v1.34.4")
    assert "go 1.24.0\n" in text
    required = text[text.index("require (") : text.index(")")]
    assert "\tk8s.io/kubernetes v1.34.4\n" in required
    assert f"\t{provision.KUBERAY_MODULE} {provision.KUBERAY_VERSION}\n" in required
    assert f"\t{provision.COREDNS_MODULE} {provision.COREDNS_VERSION}\n" in required
    replaces = [line.strip() for line in text.splitlines() if "=>" in line]
    assert replaces == [
        "k8s.io/api => k8s.io/api v0.34.4",
        "k8s.io/apiserver => k8s.io/apiserver v0.34.4",
        "k8s.io/cri-client => k8s.io/cri-client v0.34.4",
    ]
    assert "./staging" not in text


def test_wrapper_gomod_refuses_a_gomod_without_staging_replaces() -> None:
    with pytest.raises(provision.PermanentError, match="no staging replaces"):
        provision.kubernetes_wrapper_gomod("module k8s.io/kubernetes\n\ngo 1.24.0\n", "v1.34.4")


def test_ldflags_stamp_the_version_into_both_version_packages() -> None:
    flags = provision.kubernetes_ldflags("v1.34.4").split()
    assert flags[:2] == ["-s", "-w"]
    for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        assert f"-X={package}.gitVersion=v1.34.4" in flags
        assert f"-X={package}.gitMinor=34" in flags


def _fake_binaries(folder: Path, *, works: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in provision.COMPONENTS:
        path = folder / name
        path.write_text(f"#!/bin/sh\nexit {0 if works else 1}\n")
        path.chmod(0o755)


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RAYLB_CONTROLPLANE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    return tmp_path / "cache"


def test_kubebuilder_assets_win_when_they_hold_every_binary(empty_cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_binaries(tmp_path / "assets")
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    found = provision.find_binaries()
    assert found is not None and found.source == "KUBEBUILDER_ASSETS"
    assert found.kube_apiserver == tmp_path / "assets" / "kube-apiserver"
    assert found["kubelet"] == tmp_path / "assets" / "kubelet"


def test_asking_for_a_binary_the_cache_does_not_build_names_what_it_holds(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="kube-apiserver"):
        provision.Binaries(tmp_path, "cache")["docker"]


def test_tools_file_keeps_every_upstream_command_required() -> None:
    tools = provision._tools_go()
    assert tools.startswith("//go:build tools")
    for package in provision.KUBERNETES_COMMANDS.values():
        assert (f'"{package}"' in tools) != package.startswith("raylb.local/")


@pytest.mark.parametrize("missing", provision.COMPONENTS)
def test_incomplete_kubebuilder_assets_are_ignored(empty_cache: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    _fake_binaries(tmp_path / "assets")
    (tmp_path / "assets" / missing).unlink()
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    assert provision.find_binaries() is None


def test_cached_binaries_that_do_not_run_are_not_used(empty_cache: Path) -> None:
    _fake_binaries(provision.cache_dir() / "bin", works=False)
    assert provision.find_binaries() is None


def test_concurrent_callers_build_once(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[int] = []
    waiting: list[str] = []

    def fake_build(progress: provision.Progress) -> None:
        builds.append(1)
        deadline = time.monotonic() + 20
        while len(waiting) < 2 and time.monotonic() < deadline:  # both others queue on the lock
            time.sleep(0.01)
        _fake_binaries(provision.cache_dir() / "bin")

    def record(line: str) -> None:
        if line.startswith("waiting for another control-plane build"):
            waiting.append(line)

    monkeypatch.setattr(provision, "_build", fake_build)
    results: list[provision.Binaries] = []
    callers = [threading.Thread(target=lambda: results.append(provision.ensure_binaries(record)))
               for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=30)
    assert len(waiting) == 2
    assert len(builds) == 1
    assert sorted(r.source for r in results) == ["built", "cache", "cache"]


@pytest.mark.kube  # so conftest provisions (outside the test timeout) before this runs
def test_provision_command_is_quick_when_cached() -> None:
    """`python -m raylb.cluster.localkube.provision` on a provisioned machine returns at once."""
    provision.ensure_binaries(lambda _: None)  # builds on a fresh machine; cached afterwards
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "raylb.cluster.localkube.provision"],
                          capture_output=True, text=True, check=True, timeout=120)
    elapsed_s = time.monotonic() - started
    assert "ready (" in done.stdout and "building" not in done.stdout
    assert elapsed_s < 60  # generous: the work is one `--version` call per binary
