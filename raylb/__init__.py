"""raylb: a bare-metal LoadBalancer for Kubernetes whose control and data plane run as Ray actors.

This package is the pure core: custom-resource models, configuration checking, address
management, election and packet encoding. It performs no I/O and imports none of ray,
kubernetes, socket, pyroute2 or scapy (tests/unit/test_layering.py enforces it). The Ray
actors live in raylb.actors (folder actors/), the clusters around them in raylb.cluster
(folder cluster/).
"""

__version__ = "0.1.0"
