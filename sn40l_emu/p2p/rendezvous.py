"""Where the members of one in-process group meet so that a collective runs once for all.

Why: in one process, a ring step of an N-socket collective is N frames that
could be served as one (N, K) array instead of N encode/decode/mailbox round
trips (docs/architecture.md "Virtual time": the timing is a pure function of
the frames' ready times, never of the order in which they are handled). Each
member joins with its own arguments; the last one to arrive runs the batch for
everybody and hands each member its own result.

Members that disagree on the collective (another ring, another tag) join
different meetings that never fill: they fail with :class:`P2PTimeoutError`
after the transport's wall-clock timeout, as the frame path would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sn40l_emu.errors import P2PTimeoutError, SocketDeadError


@dataclass
class _Meeting:
    items: list[Any] = field(default_factory=list)
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


class Rendezvous:
    """Open meetings of one in-process group, keyed by what every member agrees on."""

    def __init__(self) -> None:
        self._open: dict[Hashable, _Meeting] = {}

    def __len__(self) -> int:
        return len(self._open)

    def clear(self, detail: str) -> int:
        """Close every open meeting (a member died mid-collective); returns how many.
        Members still waiting fail with :class:`SocketDeadError` naming ``detail``."""
        meetings, self._open = list(self._open.values()), {}
        for meeting in meetings:
            for waiting in meeting.futures:
                if not waiting.done():
                    waiting.set_exception(SocketDeadError(-1, detail))
        return len(meetings)

    async def join(
        self,
        key: Hashable,
        size: int,
        item: Any,
        run: Callable[[Sequence[Any]], Sequence[Any]],
        timeout_s: float,
        peer: int,
    ) -> Any:
        """Join meeting ``key`` of ``size`` members with ``item``; the result for ``item``.

        ``run(items)`` returns one result per item, in join order; an exception it
        raises reaches every member. ``peer`` names the socket a timeout blames.
        """
        meeting = self._open.setdefault(key, _Meeting())
        meeting.items.append(item)
        if len(meeting.items) == size:
            del self._open[key]
            try:
                results = run(meeting.items)
            except BaseException as exc:
                for waiting in meeting.futures:
                    if not waiting.done():
                        waiting.set_exception(exc)
                raise
            for waiting, result in zip(meeting.futures, results, strict=False):
                if not waiting.done():
                    waiting.set_result(result)
            return results[-1]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        meeting.futures.append(fut)
        try:
            return await asyncio.wait_for(fut, timeout_s)  # wall-clock ok
        except asyncio.TimeoutError:
            if self._open.get(key) is meeting:
                del self._open[key]
            raise P2PTimeoutError(
                peer, f"{len(meeting.items)} of {size} members joined collective {key!r}"
                f" within {timeout_s} s"
            ) from None
