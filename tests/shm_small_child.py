"""A ring all-reduce over the same-host fast path with its arenas on a given directory.

Run by ``tests/test_shm_space.py`` inside a private mount namespace whose directory
is a small tmpfs (``unshare``): arenas that wrote pages the filesystem cannot back
would kill this process with SIGBUS, so it runs apart from the test process. Prints
one JSON line: the end nanoseconds per rank, a digest of each result's bytes, and how
many arena growths were refused.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import test_p2p_fast as fast

from sn40l_emu.p2p.wire import endpoint, shm_space
from sn40l_emu.program import Algo

GROUP = (0, 1, 2, 3)
COUNT = 4 * 1024 * 1024  # 16 MiB of float32 per rank: 4 MiB segments, a 16 MiB result


def inputs() -> dict[int, np.ndarray]:
    """The same inputs in the child and in the test (random: the order of the adds shows)."""
    rng = np.random.default_rng(7)
    return {r: rng.standard_normal(COUNT).astype(np.float32) for r in GROUP}


def digest(values: object) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def main() -> int:
    directory = sys.argv[1]
    endpoint.base_dir = lambda: directory  # the endpoints, and so the arenas, live there
    got = fast._fast_all_reduce(GROUP, dict(inputs()), shm_min_bytes=256 * 1024, algo=Algo.RING, chunks=4)
    print(json.dumps({"ns": [int(ns) for _, ns in got], "digests": [digest(v) for v, _ in got],
                      "refused": shm_space.CAPS.refused}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
