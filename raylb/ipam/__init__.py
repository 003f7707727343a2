"""Address management: the pool state the allocator actor owns, with no I/O in it."""
