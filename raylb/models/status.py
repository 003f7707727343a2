"""ServiceL2Status: which node announces a Service's IP, as MetalLB publishes it.

One object per (service, announcing node), written by the operator so `kubectl get
servicel2statuses` answers "where does my IP live right now" the same way it does for MetalLB.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raylb.models.meta import Resource, WireModel


class ServiceL2StatusSpec(WireModel):
    """Empty: a ServiceL2Status only reports."""


class InterfaceInfo(WireModel):
    """One network interface an announcement is sent on."""

    name: str = Field(description="Name of the network interface.")


class ServiceL2StatusStatus(WireModel):
    """Where the service's traffic arrives."""

    node: str | None = Field(default=None, description="Node that receives the service's traffic.")
    service_name: str | None = Field(default=None, description="Name of the Service.")
    service_namespace: str | None = Field(default=None, description="Namespace of the Service.")
    interfaces: list[InterfaceInfo] = Field(
        default_factory=list, description="Interfaces that receive the traffic."
    )


class ServiceL2Status(Resource):
    """The announcing node of one LoadBalancer Service in layer 2 mode."""

    api_version: Literal["metallb.io/v1beta1"] = Field(
        default="metallb.io/v1beta1", description="API group and version of the object."
    )
    kind: Literal["ServiceL2Status"] = Field(default="ServiceL2Status", description="Kind of the object.")
    spec: ServiceL2StatusSpec = Field(default_factory=ServiceL2StatusSpec, description="Empty.")
    status: ServiceL2StatusStatus | None = Field(default=None, description="The announcement.")
