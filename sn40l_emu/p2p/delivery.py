"""The receiving end of a frame: validate, then put into the mailbox.

A socket actor's ``async def deliver(self, header, payload)`` calls
:func:`handle_delivery`; a corrupt frame raises :class:`FrameError` in that
call (so the sender's reference reports it) and leaves the mailbox untouched,
and the actor keeps serving.
"""

from __future__ import annotations

import numpy as np

from sn40l_emu.p2p.frame import decode_frame
from sn40l_emu.p2p.mailbox import Mailbox


def handle_delivery(
    mailbox: Mailbox, header: bytes, payload: np.ndarray | None, max_frame_bytes: int
) -> None:
    """Decode and validate one frame, then deliver it to ``mailbox`` (FrameError on any problem)."""
    mailbox.put(decode_frame(header, payload, max_frame_bytes))
