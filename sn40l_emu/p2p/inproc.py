"""In-process transport: N ranks in one event loop, for exact fast timing and unit tests.

Same framing, validation and timing as the Ray transport (both are
:class:`FramedTransport`), so one algorithm gives the same nanoseconds on
both. The receiver gets its own read-only copy of every payload: two ranks
never alias a buffer that one of them later mutates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from sn40l_emu.fabric.network import NetworkView
from sn40l_emu.fabric.params import P2PParams
from sn40l_emu.fabric.topology import Topology, make_topology
from sn40l_emu.p2p.frame import decode_frame
from sn40l_emu.p2p.framed import FramedTransport
from sn40l_emu.p2p.mailbox import Mailbox
from sn40l_emu.p2p.rendezvous import Rendezvous
from sn40l_emu.p2p.transport import Transport

T = TypeVar("T")


class InProcTransport(FramedTransport):
    """One rank of an in-process group; ``mailboxes`` is shared by all ranks of the group."""

    def __init__(
        self,
        rank: int,
        network: NetworkView,
        mailboxes: Mapping[int, Mailbox],
        max_frame_bytes: int,
        timeout_s: float,
    ) -> None:
        super().__init__(rank, network, mailboxes[rank], max_frame_bytes, timeout_s)
        self._mailboxes = mailboxes

    async def _deliver(self, dst: int, header: bytes, payload: np.ndarray | None) -> None:
        if dst not in self._mailboxes:
            raise ValueError(f"socket {dst} is not part of this in-process group")
        own = None if payload is None else payload.copy()  # the receiver's own buffer
        self._mailboxes[dst].put(decode_frame(header, own, self.max_frame_bytes))


def default_n_sockets(ranks: Sequence[int], sockets_per_node: int) -> int:
    """Smallest whole number of nodes that holds every rank."""
    top = max(ranks) + 1 if ranks else 1
    return max(1, -(-top // sockets_per_node)) * sockets_per_node


def make_inproc_transports(
    ranks: Sequence[int],
    params: P2PParams,
    *,
    n_sockets: int | None = None,
    sockets_per_node: int = 8,
    topology: Topology | None = None,
) -> dict[int, InProcTransport]:
    """A transport per rank, sharing mailboxes; each rank has its own NetworkView.

    Injections go to every rank's ``transport.network`` before the run.
    """
    if topology is None:
        n = n_sockets if n_sockets is not None else default_n_sockets(ranks, sockets_per_node)
        topology = make_topology(params.topology, n, sockets_per_node)
    mailboxes = {r: Mailbox(r) for r in ranks}
    meet = Rendezvous()  # ring collectives run once per step for all ranks (collectives.batched)
    transports = {
        r: InProcTransport(
            r, NetworkView(r, topology, params), mailboxes, params.max_frame_bytes, params.timeout_s
        )
        for r in ranks
    }
    for t in transports.values():
        t.rendezvous = meet
    return transports


async def gather_transports(
    transports: Mapping[int, Transport], make_coro: Callable[[Transport], Awaitable[T]]
) -> list[T]:
    """Run ``make_coro(transport)`` for every rank concurrently; results in the mapping's order.

    If one rank fails, the others are cancelled (not left waiting for frames that
    will never come) and the first error is raised.
    """
    tasks = [asyncio.ensure_future(make_coro(t)) for t in transports.values()]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def run_group(
    ranks: Sequence[int],
    make_coro: Callable[[Transport], Awaitable[T]],
    params: P2PParams,
    *,
    n_sockets: int | None = None,
    sockets_per_node: int = 8,
    transports: Mapping[int, Transport] | None = None,
) -> list[T]:
    """Build in-process transports for ``ranks`` (unless given) and run them to completion.

    Synchronous (it owns a fresh event loop); inside a running
    loop use :func:`gather_transports`. Results come in ``ranks`` order.
    """
    if transports is None:
        transports = make_inproc_transports(
            ranks, params, n_sockets=n_sockets, sockets_per_node=sockets_per_node
        )
    ordered = {r: transports[r] for r in ranks}
    # A bare loop rather than asyncio.run: the latter's SIGINT handling formats the
    # finished task (and so every result array) when it restores the handler.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(gather_transports(ordered, make_coro))
    finally:
        loop.close()
