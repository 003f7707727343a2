"""Ray actors of raylb (operator, allocator, speaker) and the node-local I/O they own."""
