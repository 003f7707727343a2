"""How each lab image is built: static Go binaries, the Debian + Ray base, the Dockerfile.

images.py decides what to build and caches the results; this module only builds, each step
logged to the work directory's build.log with a progress line now and then, and computes the
inputs that key the cache. Nothing here touches the network namespaces or the host's
container storage: buildah gets a private vfs store inside the work directory and runs
RUN steps with chroot isolation (no runc, no cgroups, no network set-up; the host network,
like `pip install` on the host).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from raylb.cluster.lab import oci
from raylb.errors import PermanentError

Progress = Callable[[str], None]

# Long steps (mmdebstrap, pip download, buildah) say they are alive this often.
HEARTBEAT_S = 30.0
LOG_TAIL_LINES = 25

# The base rootfs. bookworm's python3 is 3.11, a version Ray publishes wheels for.
DEBIAN_SUITE = "bookworm"
DEBIAN_VARIANT = "minbase"  # apt + essential packages; bash and useradd are essential
DEBIAN_INCLUDE = (
    "python3", "python3-venv",  # the venv Ray is installed into
    "ca-certificates",          # pip and Ray's HTTPS clients check certificates
    "procps",                   # ps/kill for whoever debugs a pod; Ray itself uses psutil
    "wget",                     # KubeRay's health probes (and raycluster.yaml's) call it
)
PYTHON_VERSION, PYTHON_ABI = "3.11", "cp311"
# Wheel platforms bookworm's glibc 2.36 runs; pip download does not infer older tags.
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
RAY_USER_UID = 1000  # rayproject/ray's `ray` user; KubeRay's pods assume it
VENV = "/home/ray/venv"
BASE_PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_CONFIG = {
    "User": str(RAY_USER_UID),  # numeric, so the kubelet can check runAsNonRoot
    "Env": [f"PATH={BASE_PATH}", "HOME=/home/ray", "LANG=C.UTF-8"],
    "WorkingDir": "/home/ray",
    "Cmd": ["/bin/bash"],
}
# Run by mmdebstrap inside the finished rootfs: $1 rootfs, $2 wheelhouse, $3 requirement.
# Debian's /etc/profile resets PATH for login shells (KubeRay runs `bash -lc`), so the venv
# goes on PATH in /etc/profile.d too, not only in the image's Env.
SETUP_ROOTFS_SH = f"""\
set -eu
root="$1" wheels="$2" requirement="$3"
inside() {{ chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }}
inside useradd --uid {RAY_USER_UID} --gid users --create-home --home-dir /home/ray \\
  --shell /bin/bash ray
mkdir "$root/tmp/wheelhouse"
cp "$wheels"/*.whl "$root/tmp/wheelhouse/"
inside python3 -m venv {VENV}
inside {VENV}/bin/pip install --quiet --disable-pip-version-check --no-cache-dir --no-index \\
  --find-links /tmp/wheelhouse "$requirement"
rm -rf "$root/tmp/wheelhouse"
echo 'PATH="{VENV}/bin:$PATH"' > "$root/etc/profile.d/ray-venv.sh"
inside chown -R ray:users /home/ray
"""
HOST_CERTS = "/etc/ssl/certs"
# Never copied into an image (see the repository's .dockerignore), so never hashed either.
IGNORED_DIRS = frozenset({"__pycache__"})
IGNORED_SUFFIXES = (".pyc",)


def digest(*parts: str) -> str:
    """A short hash of a recipe's inputs; part of a cache path."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(hashlib.sha256(part.encode()).digest())
    return hasher.hexdigest()[:20]


def run_logged(command: list[str], *, log: Path, what: str, progress: Progress,
               cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run one build command, output appended to `log`; PermanentError with the log's tail."""
    started = time.monotonic()
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        while True:
            try:
                code = proc.wait(timeout=HEARTBEAT_S)
                break
            except subprocess.TimeoutExpired:
                progress(f"  ... {what}: {time.monotonic() - started:.0f} s so far")
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        raise PermanentError(f"{what} failed (exit {code}); last lines of {log}:\n"
                             + "\n".join(tail))


def go_static_binary(work: Path, program: str, source: str, *, go: str,
                     progress: Progress) -> Path:
    """Compile one Go main package with no cgo into a static binary `work/<program>`."""
    src = work / "go" / program
    src.mkdir(parents=True)
    (src / "go.mod").write_text(f"module raylb.local/lab/{program}\n\ngo 1.22\n")
    (src / "main.go").write_text(source)
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": ""}
    binary = work / program
    run_logged([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(binary), "."],
               cwd=src, env=env, log=work / "build.log", what=f"{program}: go build",
               progress=progress)
    return binary


def ray_requirement(ray: str) -> str:
    return f"ray[default]=={ray}"


def _wheelhouse_key(ray: str) -> str:
    return digest(ray_requirement(ray), PYTHON_VERSION, PYTHON_ABI, *WHEEL_PLATFORMS)


def base_key(ray: str) -> str:
    return digest(DEBIAN_SUITE, DEBIAN_VARIANT, *DEBIAN_INCLUDE, SETUP_ROOTFS_SH,
                  json.dumps(BASE_CONFIG, sort_keys=True), _wheelhouse_key(ray))


def ensure_wheelhouse(root: Path, ray: str, *, log: Path, progress: Progress) -> Path:
    """Wheels of ray[default] and its dependencies for CPython 3.11 on manylinux, downloaded
    once into `root/wheelhouse-<key>` (the caller holds the cache lock)."""
    final = root / f"wheelhouse-{_wheelhouse_key(ray)}"
    if final.is_dir():
        return final
    work = Path(tempfile.mkdtemp(prefix=".wheelhouse-", dir=root))
    platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
    progress(f"wheelhouse: pip download {ray_requirement(ray)} (python {PYTHON_VERSION})")
    try:
        run_logged(
            [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(work),
             "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation",
             "cp", "--abi", PYTHON_ABI, *platforms, ray_requirement(ray)],
            log=log, what="wheelhouse: pip download", progress=progress,
        )
        os.rename(work, final)
    except BaseException:
        subprocess.run(["rm", "-rf", str(work)], check=False)
        raise
    return final


def build_base(work: Path, out: Path, progress: Progress, *, ray: str, reference: str,
               wheelhouse_root: Path) -> dict[str, object]:
    """Debian rootfs with the Ray venv (mmdebstrap), as a one-layer image (the rootfs tar)."""
    log = work / "build.log"
    started = time.monotonic()
    wheels = ensure_wheelhouse(wheelhouse_root, ray, log=log, progress=progress)
    wheelhouse_s = time.monotonic() - started
    script = work / "setup-rootfs.sh"
    script.write_text(SETUP_ROOTFS_SH)
    rootfs = work / "rootfs.tar"
    hook = f'sh {shlex.quote(str(script))} "$1" {shlex.quote(str(wheels))} ' + shlex.quote(
        ray_requirement(ray))
    progress(f"ray-base: mmdebstrap {DEBIAN_SUITE} with {', '.join(DEBIAN_INCLUDE)} and "
             f"{ray_requirement(ray)}")
    started = time.monotonic()
    (work / "tmp").mkdir()
    run_logged(
        ["mmdebstrap", "--quiet", f"--variant={DEBIAN_VARIANT}",
         f"--include={','.join(DEBIAN_INCLUDE)}", f"--customize-hook={hook}",
         DEBIAN_SUITE, str(rootfs)],
        env={**os.environ, "TMPDIR": str(work / "tmp")}, log=log, what="ray-base: mmdebstrap",
        progress=progress,
    )
    mmdebstrap_s = time.monotonic() - started
    manifest = oci.write_archive(out, reference=reference, layers=[rootfs], config=BASE_CONFIG)
    return {"manifest": manifest, "ray": ray, "wheelhouse": str(wheels),
            "wheelhouse_s": round(wheelhouse_s, 1), "mmdebstrap_s": round(mmdebstrap_s, 1),
            "rootfs_bytes": rootfs.stat().st_size}


_FLAG = re.compile(r"--[\w-]+(=\S*)?\s+")


def dockerfile_sources(text: str) -> list[str]:
    """The build-context paths a Dockerfile's COPY and ADD instructions read (COPY --from
    reads another stage, not the context, and is left out)."""
    sources: list[str] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() not in ("COPY", "ADD"):
            continue
        rest = rest.strip()
        flags = []
        while match := _FLAG.match(rest):
            flags.append(match.group(0).strip())
            rest = rest[match.end():]
        if any(flag.startswith("--from") for flag in flags):
            continue
        words = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        sources.extend(words[:-1])
    return sources


def _ignored(relative: Path) -> bool:
    return bool(IGNORED_DIRS & set(relative.parts)) or relative.name.endswith(IGNORED_SUFFIXES)


def copied_files_digest(context: Path, dockerfile: Path) -> str:
    """Hash of the Dockerfile and of every file (path, exec bit, content) it copies from
    `context`: what the image is made of, and nothing else in the repository."""
    text = dockerfile.read_text()
    files: set[Path] = set()
    for source in dockerfile_sources(text):
        matches = glob.glob(source, root_dir=context)
        if not matches:
            raise PermanentError(f"{dockerfile}: COPY source {source!r} does not exist in {context}")
        for match in matches:
            path = context / match
            found = [path] if not path.is_dir() else [p for p in path.rglob("*") if not p.is_dir()]
            files.update(p for p in found if not _ignored(p.relative_to(context)))
    hasher = hashlib.sha256(text.encode())
    for path in sorted(files):
        relative = path.relative_to(context).as_posix()
        content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
        executable = os.access(path, os.X_OK) and not path.is_symlink()
        hasher.update(f"\0{relative}\0{executable}\0{len(content)}\0".encode() + content)
    return hasher.hexdigest()


def _host_trust() -> list[str]:
    """RUN steps trust the certificate authorities the host trusts (pip fetches raylb's
    dependencies; a TLS-inspecting proxy's CA is only in the host's bundle): the host's
    /etc/ssl/certs is bind-mounted read-only over the base's (which has one: ca-certificates)
    for the build only; nothing of it is committed."""
    return ["--volume", f"{HOST_CERTS}:{HOST_CERTS}:ro"] if Path(HOST_CERTS).is_dir() else []


def build_dockerfile(work: Path, out: Path, progress: Progress, *, repo: Path, dockerfile: Path,
                     base_archive: Path, base_reference: str, reference: str) -> dict[str, object]:
    """`buildah bud` of the users' Dockerfile over the local base, pushed to an OCI archive."""
    log = work / "build.log"
    (work / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(work / "tmp")}
    store = ["buildah", "--root", str(work / "storage"), "--runroot", str(work / "run"),
             "--storage-driver", "vfs"]
    times: dict[str, object] = {}

    def step(name: str, args: list[str]) -> None:
        started = time.monotonic()
        run_logged([*store, *args], env=env, log=log, what=f"raylb: buildah {name}",
                   progress=progress)
        times[f"buildah_{name}_s"] = round(time.monotonic() - started, 1)

    progress(f"raylb: buildah bud -f {dockerfile.relative_to(repo)} over {base_reference}")
    step("pull", ["pull", "--quiet", f"oci-archive:{base_archive}"])
    step("bud", ["bud", "--isolation", "chroot", "--pull=never", "--layers=false",
                 *_host_trust(),
                 "--build-arg", f"BASE={base_reference}", "-f", str(dockerfile),
                 "-t", reference, str(repo)])
    step("push", ["push", "--quiet", "--disable-compression", reference,
                  f"oci-archive:{out}:{reference}"])
    return times
