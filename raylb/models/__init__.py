"""Wire models: metallb.io custom resources and raylb's views of core Kubernetes objects.

`parse` turns one decoded manifest (a dict) into the right model, or raises ConfigError
whose Problems name the resource, the field and the value, e.g.
``IPAddressPool 'x': spec.adresses='...': unknown field``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from raylb.errors import ConfigError, Problem
from raylb.models.meta import Condition, LabelSelector, ObjectMeta, Resource, to_wire
from raylb.models.metallb import MetalLB, select_honoured
from raylb.models.pools import AddressPool, IPAddressPool, L2Advertisement
from raylb.models.status import ServiceL2Status

GROUP = "metallb.io"

# kind -> model of every custom resource raylb reads or writes.
RESOURCE_KINDS: dict[str, type[Resource]] = {
    "MetalLB": MetalLB,
    "AddressPool": AddressPool,
    "IPAddressPool": IPAddressPool,
    "L2Advertisement": L2Advertisement,
    "ServiceL2Status": ServiceL2Status,
}

__all__ = [
    "parse_view",
    "GROUP",
    "RESOURCE_KINDS",
    "AddressPool",
    "Condition",
    "IPAddressPool",
    "L2Advertisement",
    "LabelSelector",
    "MetalLB",
    "ObjectMeta",
    "Resource",
    "ServiceL2Status",
    "parse",
    "select_honoured",
    "to_wire",
]

_MESSAGES = {
    "extra_forbidden": "unknown field; check its spelling against the metallb.io schema",
    "missing": "required field is missing",
}


ModelT = TypeVar("ModelT", bound=BaseModel)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(kind: str, name: str, error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors(include_url=False):
        value = "" if item["type"] == "missing" else str(item.get("input", ""))
        message = _MESSAGES.get(item["type"], item["msg"])
        problems.append(Problem(kind=kind, name=name, field=_path(item["loc"]), value=value, message=message))
    return problems


def parse_view(kind: str, model: type[ModelT], doc: Mapping[str, Any]) -> ModelT:
    """`doc` as a view model (e.g. a Service); ConfigError naming kind, name, field and value."""
    metadata = doc.get("metadata")
    name = str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_problems(kind, name, exc)) from exc


def parse(doc: Mapping[str, Any]) -> Resource:
    """The model of one manifest; ConfigError naming kind, name, field and value if it does not fit."""
    kind = str(doc.get("kind", ""))
    metadata = doc.get("metadata")
    name = str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""
    model = RESOURCE_KINDS.get(kind)
    if model is None:
        known = ", ".join(sorted(RESOURCE_KINDS))
        raise ConfigError([Problem(kind=kind, name=name, field="kind", value=kind, message=f"not one of {known}")])
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_problems(kind, name, exc)) from exc
