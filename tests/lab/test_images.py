"""The lab's images in a real containerd: they import under the exact references the lab uses,
and their contents keep the promises the lab relies on (what KubeRay's commands expect of a
rayproject/ray image, static binaries that run with nothing else in the image).

The images come from the cache `make provision` fills (`python -m raylb.cluster.lab.images`).
containerd is a throwaway one: its own root, state, socket and config file in a temporary
folder, in a fresh network namespace of a fixture lab name, stopped by its PID.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raylb.cluster.lab import images, netns
from raylb.cluster.lab.lab import down
from raylb.cluster.lab.topology import CONTROL, netns_name
from tests.lab.conftest import unique_lab_name

pytestmark = pytest.mark.root

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.1


@pytest.fixture(scope="module")
def built() -> dict[str, images.ImageArchive]:
    return images.ensure_images(lambda line: print(f"[images] {line}", flush=True))


def containerd_config(folder: Path) -> str:
    """Everything containerd would put on the host put under `folder` instead; no CRI (the
    import needs none, and nothing should look for CNI here)."""
    return f"""\
version = 2
root = "{folder}/root"
state = "{folder}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{folder}/containerd.sock"
[ttrpc]
  address = "{folder}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{folder}/opt"
"""


def ctr(socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "--address", str(socket), "--namespace", "k8s.io", *args],
                          capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def containerd() -> Iterator[Path]:
    """The socket of a fresh containerd running in a network namespace made for it."""
    lab = unique_lab_name()
    namespace = netns_name(lab, CONTROL)
    folder = Path(tempfile.mkdtemp(prefix="rlb-ctrd-"))  # short: a socket path has 108 bytes
    config = folder / "config.toml"
    config.write_text(containerd_config(folder))
    socket = folder / "containerd.sock"
    proc: subprocess.Popen[bytes] | None = None
    try:
        netns.create(namespace)
        with open(folder / "containerd.log", "wb") as log:
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{namespace}", "containerd", "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while ctr(socket, "version").returncode != 0:
            assert proc.poll() is None, (folder / "containerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"containerd not serving on {socket}"
            time.sleep(POLL_S)
        yield socket
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        down(lab)  # the namespace, and the fixture's state directory
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def imported(built: dict[str, images.ImageArchive], containerd: Path) -> Path:
    for image in built.values():
        images.import_into(image, containerd_socket=containerd)
    return containerd


def test_every_image_is_listed_under_its_reference_after_import(
    built: dict[str, images.ImageArchive], imported: Path
) -> None:
    listed = ctr(imported, "images", "ls", "-q")
    assert listed.returncode == 0, listed.stderr
    assert {image.reference for image in built.values()} <= set(listed.stdout.split())
    # The pod spec says `raylb:0.1.0`; containerd holds it fully qualified, as the CRI looks it up.
    assert built["raylb"].reference == "docker.io/library/raylb:0.1.0"
    for image in built.values():
        checked = ctr(imported, "images", "check", f"name=={image.reference}")
        assert "complete" in checked.stdout, checked.stdout + checked.stderr


def run_in_image(socket: Path, reference: str, command: str, *, user: str = "1000:100") -> str:
    """`command` in bash -lc (as KubeRay runs it) inside the image's unpacked rootfs, as
    `user`; the image is mounted in a private mount namespace that ends with the command."""
    script = (
        f'ctr --address {socket} --namespace k8s.io images mount "$1" "$2" >/dev/null && '
        f'chroot --userspec={user} "$2" /usr/bin/env -i HOME=/home/ray /bin/bash -lc "$3"'
    )
    with tempfile.TemporaryDirectory(prefix="rlb-mnt-") as target:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
             reference, target, command],
            capture_output=True, text=True, check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_raylb_image_runs_raylb_and_the_ray_of_this_venv_as_kuberay_expects(
    built: dict[str, images.ImageArchive], imported: Path
) -> None:
    out = run_in_image(
        imported, built["raylb"].reference,
        "id -un; echo $HOME; command -v ray python pip raylb; ulimit -n; "
        "python -c 'import importlib.metadata as m, raylb.actors.speaker, ray; "
        "print(ray.__version__, m.version(\"raylb\"))'",
    ).split()
    assert out[:2] == ["ray", "/home/ray"]
    assert out[2:6] == [f"{images.image_build.VENV}/bin/{name}" for name in ("ray", "python",
                                                                              "pip", "raylb")]
    assert out[-2:] == [images.ray_version(), "0.1.0"]


def test_the_backend_binary_says_which_pod_and_node_answered(
    built: dict[str, images.ImageArchive], imported: Path
) -> None:
    lab = unique_lab_name()
    namespace = netns_name(lab, CONTROL)
    with tempfile.TemporaryDirectory(prefix="rlb-mnt-") as target:
        script = (f"ctr --address {imported} --namespace k8s.io images mount "
                  f"{built['backend'].reference} {target} >/dev/null && ip link set lo up && "
                  f"exec chroot --userspec=65534:65534 {target} /backend")
        netns.create(namespace)
        proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{namespace}", "unshare", "--mount", "--propagation",
             "private", "sh", "-c", script],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PORT": "8081", "POD_NAME": "backend-7d4b9", "NODE_NAME": "node2"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            reply = None
            deadline = time.monotonic() + START_TIMEOUT_S
            while reply is None:
                assert proc.poll() is None, "the backend exited"
                assert time.monotonic() < deadline, "the backend never answered"
                connection = http.client.HTTPConnection("127.0.0.1", 8081, timeout=2)
                try:
                    with netns.in_netns(namespace):  # the socket is made here, in the namespace
                        connection.connect()
                    connection.request("GET", "/anything")
                    response = connection.getresponse()
                    reply = (response.status, response.getheader("Content-Length"),
                             response.read())
                except ConnectionRefusedError:
                    time.sleep(POLL_S)
                finally:
                    connection.close()
        finally:
            proc.terminate()
            proc.wait(timeout=STOP_TIMEOUT_S)
            down(lab)
    status, length, body = reply
    assert status == 200 and int(length) == len(body)
    assert json.loads(body) == {"pod": "backend-7d4b9", "node": "node2", "client": "127.0.0.1"}
