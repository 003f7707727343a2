"""raylb's Kubernetes adapter: the client, the desired-state source, the results writer, the
KubeRay speaker group and the install of deploy/. The local control plane the tests run is
raylb.cluster.localkube."""
