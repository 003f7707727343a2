"""The generated CRDs: up to date with the models, structural, and complete."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from raylb.cli import main
from raylb.crds import ALLOWED_KEYS, CRDS, DEFAULT_OUT, crd, render_all, stale_files, structural
from raylb.models import RESOURCE_KINDS

from tests.conftest import REPO

RENDERED = render_all()
DOCS = {name: yaml.safe_load(text) for name, text in RENDERED.items()}


def test_committed_crds_match_the_models() -> None:
    assert DEFAULT_OUT == REPO / "deploy" / "crds"
    assert stale_files(DEFAULT_OUT) == [], "deploy/crds is out of date: run `raylb crds` and commit the result"


def test_every_resource_kind_has_a_crd() -> None:
    assert sorted(d["spec"]["names"]["kind"] for d in DOCS.values()) == sorted(RESOURCE_KINDS)
    for name, doc in DOCS.items():
        spec = doc["spec"]
        assert name == f"{spec['group']}_{spec['names']['plural']}.yaml"
        assert doc["metadata"]["name"] == f"{spec['names']['plural']}.{spec['group']}"
        assert spec["scope"] == "Namespaced"


def test_check_command_detects_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["crds", "--out", str(tmp_path), "--check"]).exit_code == 1  # missing
    written = runner.invoke(main, ["crds", "--out", str(tmp_path)])
    assert written.exit_code == 0 and len(list(tmp_path.glob("*.yaml"))) == len(CRDS)
    assert runner.invoke(main, ["crds", "--out", str(tmp_path), "--check"]).exit_code == 0
    target = tmp_path / "metallb.io_ipaddresspools.yaml"
    target.write_text(target.read_text().replace("minItems: 1", "minItems: 2"))
    drift = runner.invoke(main, ["crds", "--out", str(tmp_path), "--check"])
    assert drift.exit_code == 1 and "metallb.io_ipaddresspools.yaml" in drift.output


# --- structural schema rules (what the API server enforces on a v1 CRD) -----------------------------


def structural_errors(node: Any, path: str) -> list[str]:
    """Violations of Kubernetes' structural schema rules, and of raylb's own (descriptions)."""
    errors: list[str] = []
    if not isinstance(node, dict):
        return [f"{path}: not a schema object"]
    unknown = set(node) - ALLOWED_KEYS
    if unknown:
        errors.append(f"{path}: keys not allowed in a structural schema: {sorted(unknown)}")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        errors.append(f"{path}: no type")
    if node.get("type") not in (None, "object", "array", "string", "integer", "number", "boolean"):
        errors.append(f"{path}: bad type {node.get('type')!r}")
    if "properties" in node and "additionalProperties" in node:
        errors.append(f"{path}: properties and additionalProperties together")
    if node.get("additionalProperties") is False:
        errors.append(f"{path}: additionalProperties false")
    if ("properties" in node or "additionalProperties" in node) and node.get("type") != "object":
        errors.append(f"{path}: properties on a non-object")
    if node.get("type") == "array":
        if not isinstance(node.get("items"), dict):
            errors.append(f"{path}: array without a single items schema")
        else:
            errors += structural_errors(node["items"], f"{path}[]")
    elif "items" in node:
        errors.append(f"{path}: items on a non-array")
    for name, sub in node.get("properties", {}).items():
        if not sub.get("description") and not (path == "" and name == "metadata"):
            errors.append(f"{path}.{name}: no description")
        errors += structural_errors(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        errors += structural_errors(node["additionalProperties"], f"{path}{{}}")
    for key in node.get("required", []):
        if key not in node.get("properties", {}):
            errors.append(f"{path}: required {key!r} is not a property")
    if "default" in node:
        expected = {"boolean": bool, "string": str, "integer": int, "array": list, "object": dict}[node["type"]]
        if not isinstance(node["default"], expected):
            errors.append(f"{path}: default {node['default']!r} is not a {node['type']}")
    if "enum" in node and not all(isinstance(v, str) for v in node["enum"]) and node.get("type") == "string":
        errors.append(f"{path}: enum values must be strings")
    if node.get("x-kubernetes-list-type") == "map":
        item = node["items"]
        for key in node.get("x-kubernetes-list-map-keys", []):
            if key not in item.get("required", []):
                errors.append(f"{path}: list-map key {key!r} must be required")
    return errors


@pytest.mark.parametrize("name", sorted(DOCS))
def test_schemas_are_structural(name: str) -> None:
    for version in DOCS[name]["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        assert structural_errors(root, "") == []
        assert root["properties"]["metadata"] == {"type": "object"}  # the API server allows nothing more
        assert set(root["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
        assert "$ref" not in RENDERED[name] and "anyOf" not in RENDERED[name] and "$defs" not in RENDERED[name]
        assert "null" not in RENDERED[name].replace("nullable", "")


def test_the_checker_catches_violations() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"description": "x", "anyOf": [{"type": "string"}, {"type": "null"}]},
            "b": {"type": "array", "description": "x"},
            "c": {"type": "string"},
            "d": {"type": "object", "description": "x", "properties": {}, "additionalProperties": {"type": "string"}},
        },
        "required": ["e"],
    }
    errors = "\n".join(structural_errors(bad, ""))
    for fragment in [".a: keys not allowed", ".a: no type", ".b: array without", ".c: no description", ".d: properties and additionalProperties", "required 'e'"]:
        assert fragment in errors


def spec_schema(kind: str, version: str = "v1beta1") -> dict[str, Any]:
    doc = next(d for d in DOCS.values() if d["spec"]["names"]["kind"] == kind)
    entry = next(v for v in doc["spec"]["versions"] if v["name"] == version)
    return entry["schema"]["openAPIV3Schema"]


def test_validation_the_api_server_can_do_for_us() -> None:
    pool = spec_schema("IPAddressPool")
    assert pool["required"] == ["spec"]
    spec = pool["properties"]["spec"]
    assert spec["required"] == ["addresses"]
    assert spec["properties"]["addresses"]["minItems"] == 1
    assert spec["properties"]["autoAssign"]["default"] is True
    assert spec["properties"]["avoidBuggyIPs"]["default"] is False
    legacy = spec_schema("AddressPool")["properties"]["spec"]
    assert legacy["properties"]["protocol"]["enum"] == ["layer2", "bgp"]
    assert sorted(legacy["required"]) == ["addresses", "protocol"]
    metallb = spec_schema("MetalLB")
    assert "required" not in metallb  # `kind: MetalLB` with no spec is valid (the operator sample)
    assert metallb["properties"]["spec"]["properties"]["logLevel"]["enum"] == ["all", "debug", "info", "warn", "error", "none"]
    conditions = metallb["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert "required" not in spec_schema("L2Advertisement")  # the sample "empty" has no spec


def test_address_pool_serves_two_versions_with_one_schema_and_one_storage_version() -> None:
    doc = DOCS["metallb.io_addresspools.yaml"]
    versions = doc["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1", "v1beta1"]
    assert [v["storage"] for v in versions] == [False, True]
    assert all(v["served"] and v["deprecated"] for v in versions)
    assert versions[0]["schema"] == versions[1]["schema"]
    assert doc["spec"]["conversion"] == {"strategy": "None"}


def _resolve(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in re.sub(r"\[[^\]]*\]", "", json_path).lstrip(".").split("."):  # drop [..] filters
        if node is None:
            return None
        if node.get("type") == "array":
            node = node["items"]
        node = node.get("properties", {}).get(part)
    return node


@pytest.mark.parametrize("name", sorted(DOCS))
def test_printer_columns_point_at_real_fields(name: str) -> None:
    for version in DOCS[name]["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        columns = version["additionalPrinterColumns"]
        assert columns[-1]["name"] == "Age"
        for column in columns[:-1]:
            assert _resolve(schema, column["jsonPath"]) is not None, column
    names = {v["name"] for v in DOCS["metallb.io_ipaddresspools.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Addresses", "Auto Assign"} <= names
    l2 = DOCS["metallb.io_servicel2statuses.yaml"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert l2[0] == {"name": "Allocated Node", "type": "string", "jsonPath": ".status.node"}


def test_every_version_has_the_status_subresource() -> None:
    for doc in DOCS.values():
        assert all(v["subresources"] == {"status": {}} for v in doc["spec"]["versions"])


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"anyOf": [{"type": "string"}, {"type": "integer"}]}, "unions"),
        ({"type": "string", "examples": ["x"]}, "'examples'"),
        ({"type": "array", "prefixItems": [{"type": "string"}]}, "'prefixItems'"),
    ],
)
def test_converter_refuses_what_kubernetes_cannot_express(schema: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        structural(schema, {})


def test_converter_inlines_refs_and_unwraps_optionals() -> None:
    defs = {"Inner": {"type": "object", "title": "Inner", "description": "model", "additionalProperties": False, "properties": {"x": {"type": "string", "title": "X", "const": "a"}}}}
    schema = {"anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}], "default": None, "description": "field", "title": "F"}
    assert structural(schema, defs) == {"description": "field", "properties": {"x": {"enum": ["a"], "type": "string"}}, "type": "object"}


def test_every_crd_is_a_valid_custom_resource_definition_document() -> None:
    for spec in CRDS:
        doc = crd(spec)
        assert doc["apiVersion"] == "apiextensions.k8s.io/v1" and doc["kind"] == "CustomResourceDefinition"
        assert sum(v["storage"] for v in doc["spec"]["versions"]) == 1
