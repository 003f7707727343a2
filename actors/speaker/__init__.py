"""Speaker: the per-node actor and the raw-socket ARP/NDP responders it holds."""
