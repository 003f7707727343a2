"""The `raylb` command line refuses bad input before anything starts: one clear message that
names the file, document, field or option and the value, a non-zero exit, never a traceback.

Nothing here starts Ray, a lab, a namespace or a control plane: `nothing_starts` replaces every
point where a command would (Ray inside raylb.cluster.control, provisioning, namespace creation,
the benchmarks' `measure`) with a stand-in that fails the test if reached. Unreachable Ray is a
port on 127.0.0.1 that nothing listens on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raylb import bench_alloc
from raylb.cluster.lab import arp_bench
from raylb.cli import COMMANDS, main
from raylb.cluster import control
from raylb.cluster.kube import bench as reconcile_bench
from raylb.cluster.lab import cli as lab_cli
from raylb.cluster.lab import lab as lab_module
from raylb.cluster.lab import netns
from raylb.cluster.memory import MemoryCluster

POOL = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p1}\nspec: {addresses: [198.18.0.128/27]}\n"
SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n"


def must_not_run(*args: object, **kwargs: object) -> Any:
    raise AssertionError("the command went past validation and tried to start something")


class FakeRay:
    """Stands in for the `ray` module inside raylb.cluster.control: joins nothing, starts nothing."""

    is_initialized = staticmethod(lambda: False)
    init = staticmethod(must_not_run)

    @staticmethod
    def get(value: Any, timeout: float | None = None) -> Any:
        return value  # FakeStore calls are synchronous: the "object ref" is already the result


class FakeStore:
    """An actor handle over an in-process MemoryCluster: `store.apply.remote(...)` just calls it."""

    def __init__(self, cluster: MemoryCluster) -> None:
        self._cluster = cluster

    def __getattr__(self, method: str) -> Any:
        return type("Method", (), {"remote": staticmethod(getattr(self._cluster, method))})


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "ray", FakeRay)
    monkeypatch.setattr(lab_cli, "ensure_binaries", must_not_run)
    monkeypatch.setattr(netns, "create", must_not_run)
    monkeypatch.setattr(netns, "remove", must_not_run)
    monkeypatch.setattr(lab_module.Lab, "_build", must_not_run)
    for bench in (reconcile_bench, bench_alloc, arp_bench):
        monkeypatch.setattr(bench, "measure", must_not_run)


@pytest.fixture
def closed_port() -> int:
    """A loopback port that nothing listens on (the kernel just handed it out and took it back)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def raylb(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_refused(result: Result, *names: str) -> None:
    """Refused as the project promises: click handled it (an unhandled exception would print a
    traceback outside CliRunner), the exit code is non-zero and the message names `names`."""
    assert result.exception is None or isinstance(result.exception, SystemExit), f"unhandled: {result.exception!r}"
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    for name in names:
        assert name in result.output, f"{name!r} not in {result.output!r}"


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- raylb apply -f ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("kind: IPAddressPool\nmetadata:\n\tname: p1\n", "line 3"),
        ("kind: 'IPAddressPool\nmetadata: {name: p1}\n", "line 1"),
    ],
    ids=["tab-indentation", "unclosed-quote"],
)
def test_broken_yaml_is_refused_naming_the_file_and_the_line(tmp_path: Path, closed_port: int, text: str, where: str) -> None:
    path = write(tmp_path, text)
    result = raylb("apply", "-f", str(path), "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, str(path), "not valid YAML", where)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("just a sentence\n", ["document 1", "expected a mapping", "got str"]),
        ("kind: Service\nmetadata: [web]\n", ["document 1", "Service needs metadata.name"]),
        (POOL.replace("v1beta1", "v2"), ["document 1", "IPAddressPool 'p1'", "apiVersion='metallb.io/v2'"]),
    ],
    ids=["scalar-document", "metadata-is-a-list", "known-kind-wrong-apiVersion"],
)
def test_a_document_that_is_not_a_usable_manifest_is_refused_naming_it(
    tmp_path: Path, closed_port: int, text: str, names: list[str]
) -> None:
    path = write(tmp_path, text)
    result = raylb("apply", "-f", str(path), "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, str(path), *names)


@pytest.mark.parametrize("second_file", [False, True], ids=["third-document", "second-file"])
def test_one_bad_document_stops_the_whole_apply_before_ray_is_contacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, second_file: bool
) -> None:
    contacted: list[str | None] = []
    monkeypatch.setattr(control, "connect", contacted.append)
    bad = POOL.replace("p1", "p3").replace("addresses:", "adresses:")
    good = write(tmp_path, POOL + "---\n" + POOL.replace("p1", "p2"), "good.yaml")
    if second_file:
        files, where = [good, write(tmp_path, bad, "bad.yaml")], f"{tmp_path / 'bad.yaml'} document 1"
    else:
        files, where = [write(tmp_path, POOL + "---\n" + POOL.replace("p1", "p2") + "---\n" + bad)], "document 3"
    result = raylb("apply", *(arg for path in files for arg in ("-f", str(path))))
    assert_refused(result, where, "IPAddressPool 'p3'", "spec.adresses")
    assert contacted == [] and "applied" not in result.output


@pytest.mark.parametrize("name", ["missing.yaml", "."], ids=["missing-file", "directory"])
def test_a_filename_that_is_not_a_readable_file_is_a_usage_error_naming_it(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    result = raylb("apply", "-f", str(path))
    assert_refused(result, "'-f' / '--filename'", str(path))
    assert result.exit_code == 2


@pytest.mark.parametrize("text", ["", "# only a comment\n---\n"], ids=["empty", "comments-only"])
def test_a_file_without_any_object_is_refused_naming_it(tmp_path: Path, closed_port: int, text: str) -> None:
    path = write(tmp_path, text)
    result = raylb("apply", "-f", str(path), "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, str(path))
    assert "cannot reach" not in result.output


def test_a_file_that_is_not_utf8_is_refused_naming_it(tmp_path: Path, closed_port: int) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"apiVersion: v1\nkind: Service\nmetadata: {name: caf\xe9}\n")
    result = raylb("apply", "-f", str(path), "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, str(path))


def test_a_pool_with_an_impossible_address_is_refused_at_apply(tmp_path: Path, closed_port: int) -> None:
    path = write(tmp_path, POOL.replace("198.18.0.128/27", "198.18.0.300/27"))
    result = raylb("apply", "-f", str(path), "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, "document 1", "spec.addresses[0]", "198.18.0.300/27")


@pytest.mark.parametrize("port", ["http", "70000"])
def test_a_service_with_an_impossible_port_is_refused_at_apply(tmp_path: Path, closed_port: int, port: str) -> None:
    path = write(tmp_path, SERVICE.replace("port: 80", f"port: {port}"))
    result = raylb("apply", "-f", str(path), "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, "Service", "spec.ports[0].port", port)


# --- raylb delete ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "missing"), [([], "KIND"), (["Service"], "NAME")])
def test_delete_without_kind_or_name_is_a_usage_error_naming_the_argument(args: list[str], missing: str) -> None:
    result = raylb("delete", *args)
    assert_refused(result, f"Missing argument '{missing}'")
    assert result.exit_code == 2


def test_delete_refuses_a_kind_raylb_does_not_read_before_contacting_ray(closed_port: int) -> None:
    result = raylb("delete", "Foo", "x", "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, "Foo", "IPAddressPool")
    assert "cannot reach" not in result.output


@pytest.mark.parametrize(
    ("text", "kind", "name"), [(SERVICE, "Service", "web"), (POOL, "IPAddressPool", "p1")], ids=["Service", "IPAddressPool"]
)
def test_delete_finds_what_apply_stored_without_a_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, kind: str, name: str
) -> None:
    store = FakeStore(MemoryCluster())
    monkeypatch.setattr(control, "connect", lambda address: None)
    monkeypatch.setattr(control, "start_memory", lambda namespace: store)
    assert raylb("apply", "-f", str(write(tmp_path, text))).exit_code == 0
    result = raylb("delete", kind, name)
    assert result.exit_code == 0 and f"{kind} {name} deleted" in result.output, result.output


# --- raylb run / status and the Ray address --------------------------------------------------


def test_run_refuses_a_directory_as_kubeconfig(tmp_path: Path) -> None:
    result = raylb("run", "--kubeconfig", str(tmp_path))
    assert_refused(result, "'--kubeconfig'", str(tmp_path), "is a directory")


@pytest.mark.parametrize("content", [None, "::: not a kubeconfig\n\t["], ids=["missing", "garbage"])
def test_run_refuses_an_unusable_kubeconfig_naming_it_before_contacting_ray(
    tmp_path: Path, closed_port: int, content: str | None
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    if content is not None:
        kubeconfig.write_text(content)
    result = raylb("run", "--kubeconfig", str(kubeconfig), "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, str(kubeconfig))


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--speaker-group", "raylb"], ["--speaker-group", "'raylb'", "expected RAYCLUSTER/GROUP"]),
        (["--speaker-group", "Raylb/Speakers"], ["--speaker-group", "'Raylb/Speakers'", "lowercase"]),
        (["--memory", "--speaker-group", "raylb/speakers"], ["--speaker-group", "--memory"]),
    ],
)
def test_run_refuses_a_speaker_group_it_cannot_size_before_contacting_ray(
    closed_port: int, args: list[str], names: list[str]
) -> None:
    result = raylb("run", *args, "--address", f"127.0.0.1:{closed_port}")
    assert_refused(result, *names)
    assert "cannot reach a Ray cluster" not in result.output


@pytest.mark.parametrize("command", ["run", "status", "delete", "uninstall"])
@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "$RAY_ADDRESS"])
def test_every_ray_command_says_in_one_line_that_ray_is_unreachable(closed_port: int, command: str, form: str) -> None:
    address = f"127.0.0.1:{closed_port}" if form == "$RAY_ADDRESS" else form.format(port=closed_port)
    args = [command, *(["Service", "web"] if command == "delete" else [])]
    if form == "$RAY_ADDRESS":
        result = raylb(*args, env={"RAY_ADDRESS": address})
    else:
        result = raylb(*args, "--address", address)
    assert_refused(result, f"cannot reach a Ray cluster at {address}: ")
    assert result.output.count("\n") == 1


def test_a_port_beyond_65535_is_refused_not_wrapped_onto_another_port(listening_port: int) -> None:
    result = raylb("status", "--address", f"127.0.0.1:{listening_port + 65536}")
    assert_refused(result, str(listening_port + 65536))


# --- raylb lab ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["up", "--nodes", "0"], ["'--nodes'", "0 is not in the range 1<=x<=40"]),
        (["up", "--nodes", "1000"], ["'--nodes'", "1000 is not in the range"]),
        (["up", "--no-kube", "--ray-system-config", "{nope"], ["--ray-system-config", "not JSON"]),
        (["failover", "--trials", "0"], ["'--trials'", "0 is not in the range 1<=x<=200"]),
        (["failover", "--graceful-trials", "-1"], ["'--graceful-trials'", "-1 is not in the range"]),
        (["failover", "--mode", "unplug"], ["'--mode'", "'unplug' is not one of 'kill', 'link'"]),
    ],
)
def test_lab_options_out_of_range_are_usage_errors_naming_option_and_value(args: list[str], names: list[str]) -> None:
    result = raylb("lab", *args)
    assert_refused(result, *names)
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["up", "--no-kube", "--no-ray", "--no-http", "--name", "Lab"], "Lab"),
        (["up", "--no-kube", "--no-ray", "--no-http", "--name", "abcdefghijklm"], "abcdefghijklm"),
        (["status", "--name", "my lab"], "my lab"),
        (["down", "--name", "my-lab"], "my-lab"),
        (["failover", "--name", "Fo"], "Fo"),
    ],
    ids=["up-uppercase", "up-13-chars", "status-space", "down-dash", "failover-uppercase"],
)
def test_an_invalid_lab_name_is_a_clear_error_naming_it(args: list[str], name: str) -> None:
    assert_refused(raylb("lab", *args), f"lab name {name!r} is invalid")


def test_lab_up_checks_the_name_before_provisioning_kubernetes_binaries() -> None:
    assert_refused(raylb("lab", "up", "--name", "Lab"), "lab name 'Lab' is invalid")


def test_failover_on_the_name_of_a_running_lab_leaves_that_lab_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    removed: list[str] = []
    monkeypatch.setattr(lab_module, "lab_namespaces", lambda name: [f"rlb-{name}-control"])
    monkeypatch.setattr(lab_module, "down", lambda name: removed.append(name) or [])
    monkeypatch.setattr(lab_module.Lab, "down", lambda self: removed.append(self.name))
    result = raylb("lab", "failover", "--name", "fo")
    assert removed == []
    assert_refused(result, "lab 'fo' already exists")


# --- raylb bench -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["reconcile", "--services", "0"], ["--services must be 1..30000"]),
        (["reconcile", "--services", "-5"], ["--services must be 1..30000"]),
        (["reconcile", "--services", "30001"], ["--services must be 1..30000"]),
        (["reconcile", "--threads", "0"], ["--threads at least 1"]),
        (["reconcile", "--kubeconfig", "/nonexistent/kubeconfig"], ["'--kubeconfig'", "/nonexistent/kubeconfig"]),
        (["alloc", "--repeat", "0"], ["--repeat must be at least 1"]),
        (["arp", "--flood-seconds", "61"], ["flood is limited to 60 s"]),
        (["nope"], ["No such command 'nope'"]),
    ],
)
def test_bench_refuses_impossible_parameters_before_measuring(args: list[str], names: list[str]) -> None:
    result = raylb("bench", *args)
    assert_refused(result, *names)
    assert result.exit_code == 2


@pytest.mark.parametrize("timeout_s", ["0", "-1"])
def test_bench_reconcile_refuses_a_timeout_that_is_not_positive(timeout_s: str) -> None:
    assert_refused(raylb("bench", "reconcile", "--timeout-s", timeout_s), "--timeout-s", timeout_s)


# --- raylb crds, help --------------------------------------------------------------------------


def test_crds_refuses_a_file_as_output_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "not a directory\n", "crds.yaml")
    for args in (["--check"], []):
        result = raylb("crds", "--out", str(path), *args)
        assert_refused(result, "'--out'", str(path), "is a file")
    assert path.read_text() == "not a directory\n"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_explains_itself_with_help(command: str) -> None:
    result = raylb(command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: main {command} ") and "Traceback" not in result.output
