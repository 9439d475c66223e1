"""The Transport interface that every collective algorithm is written against.

A payload is split into ``len(ready_ns)`` chunks (``chunk_bounds``) that each
carry their own virtual time: chunk ``i`` may leave the sender at
``ready_ns[i]``. The transport asks the sender's network view when each chunk
arrives and hands the receiver the payload with that arrival vector. One
physical message carries all chunks, so wall-clock cost does not grow with the
number of chunks (docs/architecture.md "Virtual time").

Receives match on (source, tag, sequence); the sequence is counted per
(peer, tag) on both sides in program order, never by arrival order.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sn40l_emu.fabric.network import NetworkView
    from sn40l_emu.fabric.topology import Topology


@dataclass(frozen=True)
class SymbolicTensor:
    """Shape and dtype only: timing mode, where weights and activations never exist."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        from sn40l_emu.program import np_dtype

        return self.size * np_dtype(self.dtype).itemsize

    @property
    def size(self) -> int:
        # math.prod, not np.prod: the same integer, without numpy's per-call overhead
        # (about 5% of a socket actor's CPU per small collective, py-spy)
        return int(math.prod(self.shape))


Tensor = np.ndarray | SymbolicTensor


def chunk_bounds(count: int, chunks: int) -> np.ndarray:
    """Element offsets of ``chunks`` near-equal pieces of ``count`` elements (np.array_split rule).

    Returns an int64 array of length ``chunks + 1``.
    """
    chunks = max(1, chunks)
    base, extra = divmod(count, chunks)
    sizes = np.full(chunks, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


class Transport(ABC):
    """Send/receive between sockets with virtual time. Implementations: in-process and Ray."""

    rank: int
    network: NetworkView  # this socket's view of link timing (routes, FIFO state, injections)
    topology: Topology  # wiring: routes and ring orders

    @abstractmethod
    async def send(self, dst: int, tag: int, payload: Tensor, ready_ns: np.ndarray) -> None:
        """Send ``payload`` (split into ``len(ready_ns)`` chunks) to socket ``dst``."""

    @abstractmethod
    async def recv(self, src: int, tag: int) -> tuple[Tensor, np.ndarray]:
        """Receive the next frame from ``src`` with ``tag``: (payload, arrive_ns per chunk)."""

    async def staging(self, dst: int, count: int, dtype: np.dtype) -> np.ndarray | None:
        """A writable array of ``count`` x ``dtype`` to compute the next payload for ``dst`` in,
        so that sending it costs no copy (shared memory on the same-host path); None: no such
        place, compute anywhere. Only the wall cost differs: the frame and its timing do not."""
        return None

    async def result_buffer(self, dst: int, count: int, dtype: np.dtype) -> np.ndarray | None:
        """A flat writable array of ``count`` x ``dtype`` to build a result in whose pieces are
        then sent to ``dst`` without a copy (shared memory on the same-host path); None: no
        such place. The owner must :meth:`settle` before handing the result on. Only the wall
        cost differs: frames and timing do not."""
        return None

    async def settle(self) -> None:  # noqa: B027 -- optional hook, default does nothing
        """Wait until peers have read every piece of a :meth:`result_buffer` sent to them."""

    async def flush(self) -> None:  # noqa: B027 -- optional hook, default does nothing
        """Surface failures of sends still in flight (dead peer); collectives call it at the end."""

    async def quiesce(self, dead: Collection[int] = ()) -> int:
        """Recovery, step 1: wait until every send so far has reached its live peer.

        Returns how many sends never will (to the ``dead`` sockets, or failed);
        they are forgotten, not raised. Nothing in flight by default.
        """
        return 0

    def drop_in_flight(self, detail: str, now_ns: int) -> int:
        """Recovery, step 2 (after every rank quiesced): drop what was delivered and not
        received, and the link time booked after ``now_ns`` (this socket's clock) by sends
        of the collective cut short; sequence numbers start again from 0. Returns the
        frames dropped."""
        return 0
