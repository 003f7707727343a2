"""The MetalLB operator resource (metallb.io/v1beta1 MetalLB) and which one is honoured.

Exactly one MetalLB resource drives raylb: the one named `metallb` in the operator's
namespace (as the MetalLB Operator does). Any other gets a condition saying it is ignored,
so a user who created `metallb-test` or put it in the wrong namespace sees why nothing runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from raylb.models.meta import Condition, ConditionsStatus, Resource, WireModel

HONOURED_NAME = "metallb"

# status.conditions types the operator maintains on the honoured MetalLB.
AVAILABLE = "Available"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (AVAILABLE, PROGRESSING, DEGRADED)

REASON_NOT_HONOURED = "NotHonoured"


class Toleration(WireModel):
    """corev1.Toleration: lets a pod (here: an actor) run on a node with a matching taint."""

    key: str | None = Field(default=None, description="Taint key; empty with Exists matches all.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (the default)."
    )
    value: str | None = Field(default=None, description="Taint value for the Equal operator.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the toleration holds after the taint."
    )


class MetalLBSpec(WireModel):
    """Where raylb's actors run and how they behave."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a node needs to run a speaker."
    )
    speaker_tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the speakers tolerate."
    )
    log_level: Literal["all", "debug", "info", "warn", "error", "none"] | None = Field(
        default=None, description="Log level of the operator, allocator and speakers."
    )
    load_balancer_class: str | None = Field(
        default=None,
        description="Handle only Services with this spec.loadBalancerClass; unset: only Services without one.",
    )
    controller_node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a node needs to run the allocator."
    )
    controller_tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the allocator tolerates."
    )


class MetalLBStatus(ConditionsStatus):
    """Conditions Available, Progressing and Degraded of the deployment raylb runs."""


class MetalLB(Resource):
    """The operator resource: raylb runs while the one named `metallb` exists."""

    api_version: Literal["metallb.io/v1beta1"] = Field(
        default="metallb.io/v1beta1", description="API group and version of the object."
    )
    kind: Literal["MetalLB"] = Field(default="MetalLB", description="Kind of the object.")
    spec: MetalLBSpec = Field(default_factory=MetalLBSpec, description="Desired deployment.")
    status: MetalLBStatus | None = Field(default=None, description="Observed deployment.")


@dataclass(frozen=True)
class Honoured:
    """Which MetalLB resource drives raylb, and a condition for each one that does not."""

    metallb: MetalLB | None
    ignored: tuple[tuple[MetalLB, Condition], ...] = ()


def select_honoured(
    objects: Iterable[MetalLB], *, operator_namespace: str, now: datetime
) -> Honoured:
    """Pick the MetalLB named `metallb` in `operator_namespace`; explain every other one."""
    honoured: MetalLB | None = None
    ignored: list[tuple[MetalLB, Condition]] = []
    for obj in sorted(objects, key=lambda o: (o.metadata.namespace or "", o.metadata.name)):
        if obj.metadata.name == HONOURED_NAME and obj.metadata.namespace == operator_namespace:
            honoured = obj
            continue
        message = (
            f"MetalLB {obj.key} is ignored: raylb honours only the MetalLB named "
            f"{HONOURED_NAME!r} in namespace {operator_namespace!r}; create that one instead"
        )
        condition = Condition(
            type=DEGRADED,
            status="True",
            reason=REASON_NOT_HONOURED,
            message=message,
            last_transition_time=now,
            observed_generation=obj.metadata.generation,
        )
        ignored.append((obj, condition))
    return Honoured(metallb=honoured, ignored=tuple(ignored))
