"""The local lab: network namespaces on one host standing in for a cluster's machines.

A bridge namespace (the switch), a control host (Ray head, later the Kubernetes control plane),
N nodes (a raylet, a speaker and an HTTP server each) and a client. See topology.py for the
address plan and lab.py for the life cycle.
"""

from raylb.cluster.lab.lab import Lab, LabError, down, down_all, lab_namespaces
from raylb.cluster.lab.netns import in_netns
from raylb.cluster.lab.ray_nodes import RayOptions
from raylb.cluster.lab.topology import Host

__all__ = [
    "Host", "Lab", "LabError", "RayOptions", "down", "down_all", "in_netns", "lab_namespaces",
]
