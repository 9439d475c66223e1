"""Wall-clock plumbing of the same-host fast path: Unix sockets, shared memory, CPU affinity.

Nothing here decides a virtual time: it moves frames between socket actors on one
Ray node faster than a Ray actor call would.
"""
