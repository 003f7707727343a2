"""Names the actors are found by: the Ray namespace and the speakers' name prefix.

A module of its own, importing nothing, so the speaker's process can name itself without
loading the operator's Ray wrapper (actors/ray_ops.py) and, through it, the allocator.
"""

RAY_NAMESPACE = "raylb"
SPEAKER_PREFIX = "raylb-speaker-"
