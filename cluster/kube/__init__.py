"""Kubernetes side of raylb: the local control plane, and the client that talks to it."""
