"""The local Kubernetes control plane the tests, the lab and the benchmarks run: binaries built
from the Go module proxy (`provision`), certificates (`pki`), etcd + kube-apiserver started as
processes (`controlplane`), and the Prometheus Operator's CRDs (`promcrds`). A tool around
raylb, not part of it: the operator's Kubernetes adapter is raylb.cluster.kube."""
