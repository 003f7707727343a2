"""`raylb lab up` runs the Kubernetes control plane on the lab's control host (issue 5).

One bring-up, through the CLI in a subprocess, because that is how the servers must behave:
they outlive the command that started them, answer on 198.18.0.1 inside the control
namespace only, come with the CRDs and RBAC installed and two working kubeconfigs, and
`raylb lab down` removes them with the namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from raylb.cluster.lab import Lab, down, in_netns, lab_namespaces
from raylb.cluster.lab import kube as lab_kube
from raylb.cluster.lab import netns as ns
from raylb.cluster.lab.cli import group as lab_cli
from raylb.cluster.lab.lab import state_dir
from tests.lab.conftest import unique_lab_name

pytestmark = [pytest.mark.root, pytest.mark.kube]

RAYLB = str(Path(sys.executable).parent / "raylb")
METALLB_CRDS = {
    "metallbs.metallb.io", "addresspools.metallb.io", "ipaddresspools.metallb.io",
    "l2advertisements.metallb.io", "servicel2statuses.metallb.io",
}  # fmt: skip
CONTROL_URL_PREFIX = "https://198.18.0.1:"


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent (init reaps ours)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture(scope="module")
def cli_lab() -> Iterator[tuple[Lab, str]]:
    """A one-node lab without Ray, built by `raylb lab up` in a child process that has exited."""
    name = unique_lab_name()
    try:
        result = subprocess.run(
            [RAYLB, "lab", "up", "--name", name, "--nodes", "1", "--no-ray", "--no-http"],
            capture_output=True, text=True, timeout=400, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        yield Lab.attach(name), result.stdout
    finally:
        down(name)


def test_up_prints_where_the_api_server_answers_and_the_kubeconfigs(cli_lab: tuple[Lab, str]) -> None:
    lab, output = cli_lab
    assert lab.kube is not None
    assert lab.kube.url.startswith(CONTROL_URL_PREFIX)
    assert lab.kube.admin_kubeconfig == str(state_dir(lab.name) / "admin.kubeconfig")
    assert lab.kube.operator_kubeconfig == str(state_dir(lab.name) / "operator.kubeconfig")
    for line in (lab.kube.url, lab.kube.admin_kubeconfig, lab.kube.operator_kubeconfig):
        assert line in output
    for path in (lab.kube.admin_kubeconfig, lab.kube.operator_kubeconfig):
        assert lab.kube.url in Path(path).read_text()
        assert os.stat(path).st_mode & 0o077 == 0, f"{path} holds credentials: owner-only"


def test_the_servers_outlive_the_command_and_run_in_the_control_namespace(cli_lab: tuple[Lab, str]) -> None:
    lab, _ = cli_lab
    assert lab.kube is not None and len(lab.kube.pids) == 2
    assert set(lab.kube.pids) <= set(ns.pids(lab.control.netns))
    assert lab_kube.ready(lab.control, lab.kube)


def test_the_crds_are_installed_and_the_admin_kubeconfig_works(cli_lab: tuple[Lab, str]) -> None:
    lab, _ = cli_lab
    assert lab.kube is not None
    with lab_kube.admin_api(lab.control, lab.kube) as api:
        crds = client.ApiextensionsV1Api(api).list_custom_resource_definition().items
        namespaces = {n.metadata.name for n in client.CoreV1Api(api).list_namespace().items}
    assert METALLB_CRDS <= {c.metadata.name for c in crds}
    assert "metallb-system" in namespaces


def test_the_operator_kubeconfig_has_raylbs_rights_and_no_more(cli_lab: tuple[Lab, str]) -> None:
    lab, _ = cli_lab
    assert lab.kube is not None
    with in_netns(lab.control.netns):
        api = config.new_client_from_config(config_file=lab.kube.operator_kubeconfig)
        with api:
            custom = client.CustomObjectsApi(api)
            pools = custom.list_namespaced_custom_object("metallb.io", "v1beta1", "metallb-system", "ipaddresspools")
            services = client.CoreV1Api(api).list_service_for_all_namespaces()
            with pytest.raises(ApiException) as denied:
                client.CoreV1Api(api).list_namespaced_secret("metallb-system")
    assert pools["items"] == [] and services.items is not None
    assert denied.value.status == 403


def test_status_reports_the_control_plane(cli_lab: tuple[Lab, str]) -> None:
    lab, _ = cli_lab
    result = CliRunner().invoke(lab_cli, ["status", "--name", lab.name, "--json"])
    assert result.exit_code == 0, result.output
    kube = json.loads(result.output)["kube"]
    assert kube["ready"] is True and kube["url"].startswith(CONTROL_URL_PREFIX)
    assert sorted(kube["alive_pids"]) == sorted(kube["pids"])
    text = CliRunner().invoke(lab_cli, ["status", "--name", lab.name])
    assert "answering" in text.output and "NOT answering" not in text.output


def test_down_removes_the_servers_with_the_lab(cli_lab: tuple[Lab, str]) -> None:
    """Last in the module: it takes the lab away."""
    lab, _ = cli_lab
    assert lab.kube is not None
    pids = lab.kube.pids
    result = subprocess.run([RAYLB, "lab", "down", "--name", lab.name], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lab_namespaces(lab.name) == []
    assert not [pid for pid in pids if running(pid)], "etcd/kube-apiserver survived lab down"
    assert not state_dir(lab.name).exists()
