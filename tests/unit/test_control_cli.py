"""`raylb apply` checks every manifest before anything is applied, and Ray being unreachable
is a one-line error, not a traceback."""

from __future__ import annotations

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
