"""Kubernetes metav1 shapes every raylb resource model shares.

Two kinds of wire model live in raylb.models:

- `WireModel` mirrors a part of a custom resource raylb defines (spec, status and what is
  nested in them). Unknown fields are rejected: a typo in a pool must be an error the user
  sees, not a setting silently ignored.
- `ViewModel` is raylb's reading of a built-in object (Service, EndpointSlice, Node) or of
  object metadata. Those carry many fields raylb does not care about; they are ignored.

Field names are snake_case in Python and camelCase on the wire (`populate_by_name` accepts
both, so dicts from the kubernetes client's `to_dict()` load too). `to_wire` gives the
camelCase dict to send to the API server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

# metav1.Condition.reason: a CamelCase word, as the API server validates it.
CONDITION_REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
# metav1.Condition.message limit, as the API server validates it.
CONDITION_MESSAGE_MAX_CHARS = 32768


class WireModel(BaseModel):
    """A part of a raylb custom resource: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ViewModel(BaseModel):
    """raylb's reading of an object it does not own: unknown fields are ignored, nulls dropped."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        # The kubernetes client's to_dict() spells absent fields as None; treat them as absent.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The JSON-ready, camelCase dict of a model, without unset optional fields."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


class ObjectMeta(ViewModel):
    """The part of metav1.ObjectMeta raylb reads; the API server owns the rest."""

    name: str = Field(description="Name of the object, unique in its namespace.")
    namespace: str | None = Field(default=None, description="Namespace of the object.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the object.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations of the object.")
    uid: str | None = Field(default=None, description="Unique id the API server gave the object.")
    resource_version: str | None = Field(
        default=None, description="Version of the object, for optimistic concurrency."
    )
    generation: int | None = Field(default=None, description="Sequence number of spec changes.")
    creation_timestamp: datetime | None = Field(
        default=None, description="When the API server created the object."
    )
    deletion_timestamp: datetime | None = Field(
        default=None, description="When deletion was requested, if it was."
    )


class LabelSelectorRequirement(WireModel):
    """One matchExpressions entry of a metav1.LabelSelector."""

    key: str = Field(description="The label key the requirement applies to.")
    operator: str = Field(description="One of In, NotIn, Exists, DoesNotExist.")
    values: list[str] = Field(
        default_factory=list,
        description="Values for In and NotIn (non-empty); empty for Exists and DoesNotExist.",
    )


class LabelSelector(WireModel):
    """metav1.LabelSelector: all matchLabels and all matchExpressions must hold."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels that must be present with exactly these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Requirements that must all hold."
    )


class Condition(WireModel):
    """metav1.Condition: one aspect of an object's state, for status.conditions."""

    type: str = Field(description="Type of the condition, e.g. Available.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="One CamelCase word saying why the condition is in this state.",
        pattern=CONDITION_REASON_PATTERN,
        max_length=1024,
    )
    message: str = Field(
        default="",
        description="What happened and, if something is wrong, what to change.",
        max_length=CONDITION_MESSAGE_MAX_CHARS,
    )
    last_transition_time: datetime = Field(description="When the status last changed.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )


# status.conditions is a list keyed by type (one condition per type), as in built-in APIs.
CONDITIONS_SCHEMA = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class ConditionsStatus(WireModel):
    """A status holding conditions only (raylb reports configuration problems through them)."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Conditions raylb reports for this resource.",
        json_schema_extra=CONDITIONS_SCHEMA,
    )


class Resource(BaseModel):
    """The apiVersion/kind/metadata envelope of a custom resource; subclasses add spec/status."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_version: str = Field(description="API group and version of the object.")
    kind: str = Field(description="Kind of the object.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")

    @property
    def key(self) -> str:
        """"namespace/name", as Kubernetes tools print it."""
        return f"{self.metadata.namespace or ''}/{self.metadata.name}"
