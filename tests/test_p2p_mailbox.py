"""Mailbox matching and the in-process transport's copy and sequencing rules."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from sn40l_emu.errors import FrameError, P2PTimeoutError
from sn40l_emu.fabric.params import LinkParams, P2PParams, TopologyKind
from sn40l_emu.p2p.delivery import handle_delivery
from sn40l_emu.p2p.frame import Frame, decode_frame, encode_frame
from sn40l_emu.p2p.inproc import make_inproc_transports, run_group
from sn40l_emu.p2p.mailbox import Mailbox
from sn40l_emu.p2p.transport import SymbolicTensor, Transport
from sn40l_emu.units import GB

PARAMS = P2PParams(
    TopologyKind.FULL_MESH, LinkParams(GB, 100), 0, 1 << 24, 0, 2.0, LinkParams(GB, 100)
)


def _frame(src: int, dst: int, tag: int, seq: int, value: float = 1.0) -> Frame:
    header, payload = encode_frame(
        src, dst, tag, seq, np.full(2, value, np.float32), np.array([seq])
    )
    return decode_frame(header, payload, 1 << 20)


def test_put_before_get_and_get_before_put() -> None:
    async def main() -> None:
        box = Mailbox(1)
        box.put(_frame(0, 1, 5, 0, 1.0))
        early = await box.get(0, 5, 0, 1.0)
        waiter = asyncio.ensure_future(box.get(0, 5, 1, 1.0))
        await asyncio.sleep(0)
        box.put(_frame(0, 1, 5, 1, 2.0))
        late = await waiter
        assert early.seq == 0 and late.seq == 1 and len(box) == 0

    asyncio.run(main())


def test_matching_is_by_key_not_arrival_order() -> None:
    async def main() -> None:
        box = Mailbox(1)
        for seq in (2, 0, 1):
            box.put(_frame(0, 1, 0, seq))
        box.put(_frame(3, 1, 0, 0, 9.0))
        got = [await box.get(0, 0, s, 1.0) for s in range(3)]
        assert [f.seq for f in got] == [0, 1, 2]
        other = await box.get(3, 0, 0, 1.0)
        assert other.payload is not None and other.payload[0] == 9.0

    asyncio.run(main())


def test_duplicates_wrong_destination_and_timeout() -> None:
    async def main() -> None:
        box = Mailbox(1)
        box.put(_frame(0, 1, 0, 0))
        with pytest.raises(FrameError, match="duplicate"):
            box.put(_frame(0, 1, 0, 0))
        with pytest.raises(FrameError, match="delivered to socket 1"):
            box.put(_frame(0, 2, 0, 0))
        with pytest.raises(P2PTimeoutError) as info:
            await box.get(4, 0, 0, 0.01)
        assert info.value.socket == 4

    asyncio.run(main())


def test_handle_delivery_validates_before_putting() -> None:
    box = Mailbox(1)
    header, payload = encode_frame(0, 1, 0, 0, np.ones(3, np.float32), np.array([7]))
    with pytest.raises(FrameError):
        handle_delivery(box, header[:-2], payload, 1 << 20)
    assert len(box) == 0
    handle_delivery(box, header, payload, 1 << 20)
    assert len(box) == 1


def test_receiver_gets_its_own_read_only_copy() -> None:
    async def body(t: Transport) -> np.ndarray | None:
        if t.rank == 0:
            buf = np.arange(4, dtype=np.float32)
            await t.send(1, 0, buf, np.array([0, 0]))
            buf[:] = -1  # the sender reuses its buffer at once
            return None
        got, arrive = await t.recv(0, 0)
        assert isinstance(got, np.ndarray) and not got.flags.writeable
        assert arrive.tolist() == [108, 116]  # 8 B per chunk at 1 B/ns + 100 ns
        return got

    out = run_group((0, 1), body, PARAMS)
    np.testing.assert_array_equal(out[1], np.arange(4, dtype=np.float32))


def test_sequences_per_peer_and_tag_and_symbolic_payload() -> None:
    async def body(t: Transport) -> list[object]:
        if t.rank == 0:
            await t.send(1, 3, np.zeros(1, np.int32), np.array([0]))
            await t.send(1, 4, SymbolicTensor((1000,), "bfloat16"), np.array([0]))
            await t.send(1, 3, np.ones(1, np.int32), np.array([0]))
            return []
        b, _ = await t.recv(0, 4)
        a0, _ = await t.recv(0, 3)
        a1, _ = await t.recv(0, 3)
        return [b, a0, a1]

    out = run_group((0, 1), body, PARAMS)[1]
    assert out[0] == SymbolicTensor((1000,), "bfloat16")
    assert int(out[1][0]) == 0 and int(out[2][0]) == 1  # type: ignore[index]


def test_transport_guards() -> None:
    ts = make_inproc_transports((0, 1), PARAMS)
    assert ts[0].topology.n_sockets == 8 and ts[1].network.owner == 1

    async def main() -> None:
        with pytest.raises(ValueError, match="itself"):
            await ts[0].send(0, 0, np.zeros(1, np.float32), np.array([0]))
        with pytest.raises(ValueError, match="at least one chunk"):
            await ts[0].send(1, 0, np.zeros(1, np.float32), np.array([], np.int64))
        with pytest.raises(ValueError, match="not part of"):
            await ts[0].send(5, 0, np.zeros(1, np.float32), np.array([0]))
        too_big = np.zeros(1 << 23, np.float32)
        with pytest.raises(FrameError, match="max_frame_bytes"):
            await ts[0].send(1, 0, too_big, np.array([0]))

    asyncio.run(main())
