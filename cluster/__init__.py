"""The clusters around the actors: Kubernetes client, Ray helpers, the local network-namespace lab."""
