"""raylb's view of a core/v1 Service: exactly the fields raylb reads, nothing else.

A real Service carries many more fields (clusterIP, nodePorts, sessionAffinity, ...); they
are ignored, not rejected, because raylb does not own the Service schema.
"""

from __future__ import annotations

from pydantic import Field

from raylb.models.meta import ViewModel

LOAD_BALANCER = "LoadBalancer"
CLUSTER = "Cluster"
LOCAL = "Local"


class ServiceMeta(ViewModel):
    """The Service metadata raylb reads."""

    name: str = Field(description="Name of the Service.")
    namespace: str = Field(default="default", description="Namespace of the Service.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels (for serviceSelectors).")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations (metallb.io/ and metallb.universe.tf/)."
    )
    resource_version: str | None = Field(default=None, description="Version, for conflict-free writes.")
    uid: str | None = Field(default=None, description="Unique id of the Service.")


class ServicePort(ViewModel):
    """One port of the Service, as it matters for sharing an IP."""

    name: str | None = Field(default=None, description="Name of the port.")
    protocol: str = Field(default="TCP", description="TCP, UDP or SCTP.")
    port: int = Field(ge=1, le=65535, description="Port number on the load-balancer IP.")


class ServiceSpec(ViewModel):
    """The Service spec fields raylb reads."""

    type: str = Field(default="ClusterIP", description="Only LoadBalancer services get an IP.")
    load_balancer_ip: str | None = Field(
        default=None, alias="loadBalancerIP", description="Requested IP (deprecated by Kubernetes)."
    )
    load_balancer_class: str | None = Field(default=None, description="Which implementation handles it.")
    ip_families: list[str] = Field(default_factory=list, description="IPv4/IPv6, primary first.")
    ip_family_policy: str | None = Field(
        default=None, description="SingleStack, PreferDualStack or RequireDualStack."
    )
    external_traffic_policy: str | None = Field(default=None, description="Cluster or Local.")
    ports: list[ServicePort] = Field(default_factory=list, description="Ports of the Service.")
    selector: dict[str, str] = Field(default_factory=dict, description="Labels of the backend pods.")


class LoadBalancerIngress(ViewModel):
    """One address the load balancer is reachable at."""

    ip: str | None = Field(default=None, description="The IP address.")
    hostname: str | None = Field(default=None, description="A DNS name, for load balancers that use one.")


class LoadBalancerStatus(ViewModel):
    """The load balancer's addresses."""

    ingress: list[LoadBalancerIngress] = Field(default_factory=list, description="Assigned addresses.")


class ServiceStatus(ViewModel):
    """The Service status raylb reads and writes."""

    load_balancer: LoadBalancerStatus = Field(
        default_factory=LoadBalancerStatus, description="Assigned load-balancer addresses."
    )


class Service(ViewModel):
    """A core/v1 Service, reduced to what raylb reads."""

    metadata: ServiceMeta = Field(description="Name, namespace, labels, annotations.")
    spec: ServiceSpec = Field(default_factory=ServiceSpec, description="The Service spec.")
    status: ServiceStatus = Field(default_factory=ServiceStatus, description="The Service status.")

    @property
    def key(self) -> str:
        """"namespace/name", the allocator's name for the Service."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def ingress_ips(self) -> tuple[str, ...]:
        """The IPs in status.loadBalancer.ingress, in order."""
        return tuple(i.ip for i in self.status.load_balancer.ingress if i.ip)
