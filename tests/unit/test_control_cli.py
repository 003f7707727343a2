"""`raylb apply` checks every manifest before anything is applied, and Ray being unreachable
is a one-line error, not a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from raylb.cluster.control import apply_command, read_manifests, status_command

POOL = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: doc-example}\nspec: {addresses: [198.18.0.128/27]}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    return path


def test_a_pool_without_namespace_lands_in_the_operator_namespace(tmp_path: Path) -> None:
    [(kind, doc)] = read_manifests((write(tmp_path, POOL),))
    assert kind == "IPAddressPool" and doc["metadata"]["namespace"] == "metallb-system"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("metadata: {name: x}\n", "kind=None is not one raylb reads"),
        ("kind: ConfigMap\nmetadata: {name: x}\n", "kind='ConfigMap'"),
        ("kind: Service\nmetadata: {}\n", "Service needs metadata.name"),
        (POOL.replace("addresses:", "adresses:"), "spec.adresses"),
        (POOL + "---\nkind: Service\nmetadata: {}\n", "document 2"),
    ],
)
def test_bad_manifests_are_refused_naming_file_document_and_field(tmp_path: Path, text: str, message: str) -> None:
    result = CliRunner().invoke(apply_command, ["-f", str(write(tmp_path, text)), "--address", "198.18.0.1:1"])
    assert result.exit_code != 0
    assert message in result.output and "Traceback" not in result.output


def test_an_unreachable_ray_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(status_command, ["--address", "127.0.0.1:1"])
    assert result.exit_code != 0
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in result.output


def test_status_shows_a_service_without_an_ip_as_pending_with_the_reason() -> None:
    from raylb.cluster.control import pending_services, status_text  # noqa: PLC0415

    operator = {"pending": {"default/web": "address pool 'nowhere' does not exist", "default/ok": "stale"}}
    services = [{"service": "default/ok", "ips": ["198.18.0.128"], "pool": "doc-example", "node": "node1"}]
    services += pending_services(operator, {"default/ok"})
    text = status_text({"pools": {}, "services": services, "speakers": []})
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("default/")}
    assert lines["default/web"].split()[1] == "<pending>"
    assert "(address pool 'nowhere' does not exist)" in lines["default/web"]
    assert "<pending>" not in lines["default/ok"]  # an assigned Service is never pending


def test_status_service_prints_each_node_with_rank_and_reason() -> None:
    from raylb.cluster.control import why_table  # noqa: PLC0415

    rows = [{"ip": "198.18.0.128", "announcer": "node2", "services": ["default/web"], "nodes": [
        {"node": "node1", "rank": 1, "reason": "NOT_ALIVE", "text": "not alive"},
        {"node": "node2", "rank": 2, "reason": "ANNOUNCER", "text": "announcer"},
        {"node": "node3", "rank": 3, "reason": "OUTRANKED", "text": "outranked by node node2"},
    ]}]  # fmt: skip
    lines = why_table("default/web", rows).splitlines()
    assert lines[0] == "198.18.0.128 (announced by node2)"
    assert lines[1].split() == ["NODE", "RANK", "REASON"]
    assert lines[2].split() == ["node1", "1", "not", "alive"]
    assert lines[4].split()[:2] == ["node3", "3"] and lines[4].endswith("outranked by node node2")


@pytest.mark.parametrize("value", ["web", "a/b/c", "/web", "default/"])
def test_status_service_wants_namespace_slash_name(value: str) -> None:
    result = CliRunner().invoke(status_command, ["--service", value, "--address", "127.0.0.1:1"])
    assert result.exit_code != 0
    assert f"--service {value!r}: expected NAMESPACE/NAME" in result.output and "Traceback" not in result.output


def test_run_refuses_a_metrics_port_outside_0_to_65535() -> None:
    from raylb.cluster.control import run_command  # noqa: PLC0415

    result = CliRunner().invoke(run_command, ["--metrics-port", "70000", "--address", "127.0.0.1:1"])
    assert result.exit_code != 0 and "--metrics-port" in result.output and "Traceback" not in result.output
@pytest.mark.parametrize(("content", "message"), [(None, "cannot be read"), ("", "is empty"), ("  \n", "is empty")])
@pytest.mark.parametrize("given", ["option", "env"])
def test_an_unusable_token_file_is_refused_naming_it_before_contacting_ray(
    tmp_path: Path, content: str | None, message: str, given: str
) -> None:
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    args, env = (["--token-file", str(token)], {}) if given == "option" else ([], {"RAY_AUTH_TOKEN_PATH": str(token)})
    result = CliRunner().invoke(status_command, [*args, "--address", "198.18.0.1:1"], env=env)
    assert result.exit_code == 2, result.output
    assert f"{token}: {message}" in result.output and "Traceback" not in result.output


def test_a_token_file_is_handed_to_ray_and_switches_token_mode_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("0123abcd\n")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "")  # restored afterwards, whatever the command sets
    seen: dict[str, str | None] = {}

    def fake_init(**kwargs: object) -> None:
        seen.update({k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")})
        raise ConnectionError("refused")

    monkeypatch.setattr("raylb.cluster.control._check_reachable", lambda address: None)
    monkeypatch.setattr("raylb.cluster.control.ray.init", fake_init)
    result = CliRunner().invoke(status_command, ["--token-file", str(token), "--address", "198.18.0.1:6379"])
    assert result.exit_code == 1 and "check that the token is this cluster's" in result.output, result.output
    assert seen == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token.resolve())}
