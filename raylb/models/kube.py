"""raylb's views of EndpointSlices and Nodes: what the layer-2 election needs from them.

A speaker may announce a service only from a node that has a ready endpoint of it (for
externalTrafficPolicy Local) and that is itself Ready; these views carry just that.
"""

from __future__ import annotations

from pydantic import Field

from raylb.models.meta import ViewModel

# The label every EndpointSlice carries naming its Service (discovery.k8s.io/v1).
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class SliceMeta(ViewModel):
    """The EndpointSlice metadata raylb reads."""

    name: str = Field(description="Name of the EndpointSlice.")
    namespace: str = Field(default="default", description="Namespace of the EndpointSlice.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels; name the Service.")


class EndpointConditions(ViewModel):
    """Readiness of one endpoint; an absent value means unknown, read as ready (per the API)."""

    ready: bool | None = Field(default=None, description="The endpoint takes new traffic.")
    serving: bool | None = Field(default=None, description="The endpoint answers, maybe terminating.")
    terminating: bool | None = Field(default=None, description="The endpoint is shutting down.")


class Endpoint(ViewModel):
    """One backend of a Service."""

    addresses: list[str] = Field(default_factory=list, description="Addresses of the backend.")
    conditions: EndpointConditions = Field(
        default_factory=EndpointConditions, description="Readiness of the backend."
    )
    node_name: str | None = Field(default=None, description="Node the backend runs on.")

    @property
    def is_ready(self) -> bool:
        return self.conditions.ready is not False


class EndpointSlice(ViewModel):
    """A discovery.k8s.io/v1 EndpointSlice, reduced to what raylb reads."""

    metadata: SliceMeta = Field(description="Name, namespace and labels.")
    address_type: str | None = Field(default=None, description="IPv4, IPv6 or FQDN.")
    endpoints: list[Endpoint] = Field(default_factory=list, description="The backends.")

    @property
    def service_key(self) -> str | None:
        """"namespace/name" of the Service the slice belongs to, if it names one."""
        service = self.metadata.labels.get(SERVICE_NAME_LABEL)
        return f"{self.metadata.namespace}/{service}" if service else None

    def ready_nodes(self) -> frozenset[str]:
        """Nodes with at least one ready endpoint in this slice."""
        return frozenset(e.node_name for e in self.endpoints if e.node_name and e.is_ready)


class NodeMeta(ViewModel):
    """The Node metadata raylb reads."""

    name: str = Field(description="Name of the Node.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels (for nodeSelectors).")


class NodeCondition(ViewModel):
    """One condition of a Node, e.g. Ready."""

    type: str = Field(description="Condition type, e.g. Ready or NetworkUnavailable.")
    status: str = Field(description="True, False or Unknown.")


class NodeStatus(ViewModel):
    """The Node status raylb reads."""

    conditions: list[NodeCondition] = Field(default_factory=list, description="Node conditions.")


class Taint(ViewModel):
    """One taint of a Node: pods without a matching toleration stay off (or are evicted)."""

    key: str = Field(description="Taint key.")
    value: str = Field(default="", description="Taint value.")
    effect: str = Field(description="NoSchedule, PreferNoSchedule or NoExecute.")


class NodeSpec(ViewModel):
    """The Node spec raylb reads: where a speaker pod may be scheduled."""

    taints: list[Taint] = Field(default_factory=list, description="Taints of the node.")
    unschedulable: bool = Field(default=False, description="Cordoned: no new pods.")


class Node(ViewModel):
    """A core/v1 Node, reduced to what raylb reads."""

    metadata: NodeMeta = Field(description="Name and labels.")
    spec: NodeSpec = Field(default_factory=NodeSpec, description="Taints and cordon.")
    status: NodeStatus = Field(default_factory=NodeStatus, description="Conditions.")

    @property
    def is_ready(self) -> bool:
        """The Ready condition is True (a node without one is not ready)."""
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)
