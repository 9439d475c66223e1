"""A socket program: a static list of operations, like the hardware-orchestrated
schedule handed to the AGCUs of a real SN40L (docs/model.md §1, "Kernel launch").

The same program serves timing mode (tensors are shapes only) and functional
mode (a kernel carries a numpy function and names the buffers it reads and
writes in the socket's tensor store). Ops are frozen dataclasses so that a
program can be hashed for cost reuse and shipped to a Ray actor cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class Tier(str, Enum):
    """Memory tiers of one socket (docs/model.md §1 "Memory tiers"); HOST is the x86 host's DRAM."""

    SRAM = "sram"
    HBM = "hbm"
    DDR = "ddr"
    HOST = "host"


class StreamKind(str, Enum):
    """What a memory stream carries, for the latency breakdown."""

    WEIGHTS = "weights"
    KV = "kv"
    ACTIVATIONS = "activations"


class Launch(str, Enum):
    """How a kernel is launched (docs/model.md §1): by the host per call, or from the static schedule."""

    SO = "so"  # software orchestrated: host round trip per kernel call
    HO = "ho"  # hardware orchestrated: AGCUs run the schedule, ~zero overhead
    GPU = "gpu"  # a CUDA kernel launch on the DGX baselines
    NONE = "none"  # continuation of a kernel already launched (a fused layer split around a collective)


class CollectiveKind(str, Enum):
    ALL_REDUCE = "all_reduce"
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    BROADCAST = "broadcast"


class ReduceOp(str, Enum):
    SUM = "sum"
    MAX = "max"
    MIN = "min"


class Algo(str, Enum):
    """Collective algorithm; AUTO lets the selector choose (as NCCL's tuner does).

    RING, ONESHOT and TREE are the P2P model's; where NCCL times a collective
    (GPU profiles, ``nccl.enabled``) AUTO, RING and NVLS (NVLink SHARP, all-reduce
    on a profile with ``nccl.nvls_channels >= 2``) restrict NCCL's tuner as
    ``NCCL_ALGO`` does (collectives/nccl.py).
    """

    AUTO = "auto"
    RING = "ring"
    ONESHOT = "oneshot"
    TREE = "tree"
    NVLS = "nvls"


@dataclass(frozen=True)
class MemStream:
    """Bytes a kernel moves to or from one tier while it runs."""

    tier: Tier
    size_bytes: int
    kind: StreamKind
    write: bool = False


@dataclass(frozen=True)
class Stage:
    """One operator as a stage of a fused kernel's pipeline (docs/model.md §1 "The tile as a pipeline")."""

    name: str
    flops: int
    buffer_bytes: int  # stage buffer held in PMUs (SRAM)


@dataclass(frozen=True)
class KernelOp:
    """One kernel call.

    ``stages`` lists the operators fused into it (a single stage when unfused);
    ``streams`` the off-chip traffic (weights, KV cache, spilled activations).
    In functional mode ``fn(*[store[i] for i in inputs], **dict(attrs))`` runs
    and its result(s) are written to ``outputs``; in timing mode ``fn`` is None.
    """

    name: str
    stages: tuple[Stage, ...]
    streams: tuple[MemStream, ...]
    launch: Launch
    fused: bool
    fn: Callable[..., object] | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    attrs: tuple[tuple[str, object], ...] = ()

    @property
    def flops(self) -> int:
        return sum(s.flops for s in self.stages)

    @property
    def sram_bytes(self) -> int:
        return sum(s.buffer_bytes for s in self.stages)


@dataclass(frozen=True)
class CopyOp:
    """A DMA copy between two tiers of this socket, on that tier pair's engine."""

    name: str
    src: Tier
    dst: Tier
    size_bytes: int
    segment: str = ""  # segment moved (functional payload follows it); "" = anonymous bytes
    blocking: bool = True  # False: issue on the engine and go on; a DmaFenceOp waits for it


@dataclass(frozen=True)
class CollectiveOp:
    """A collective over a group of sockets, run over the P2P layer.

    ``buffer`` names the tensor-store entry it reads and, in place, overwrites in
    functional mode; ``out_buffer`` (when set) receives the result instead and
    leaves ``buffer`` intact (out of place, as nccl-tests' out-of-place column).
    In timing mode ``shape``/``dtype`` stand for the data.
    """

    name: str
    kind: CollectiveKind
    group: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: str  # "float32" | "float16" | "bfloat16"
    op: ReduceOp = ReduceOp.SUM
    algo: Algo = Algo.AUTO
    chunks: int = 0  # 0 = the selector's choice
    buffer: str = ""
    root: int = 0  # broadcast root (a socket index)
    out_buffer: str = ""  # functional mode: where the result goes ("" = ``buffer``, in place)

    @property
    def size_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np_dtype(self.dtype).itemsize


@dataclass(frozen=True)
class AllocOp:
    """Reserve a named segment in a tier (static lifetime analysis happens before)."""

    segment: str
    tier: Tier
    size_bytes: int
    read_only: bool = False


@dataclass(frozen=True)
class FreeOp:
    segment: str
    tier: Tier


@dataclass(frozen=True)
class WaitOp:
    """Advance the clock to at least ``until_ns`` (an arrival, a barrier from the coordinator)."""

    until_ns: int
    name: str = "wait"


@dataclass(frozen=True)
class DmaFenceOp:
    """Wait until every copy issued so far on this socket's DMA engines has finished."""

    name: str = "dma_fence"


Op = KernelOp | CopyOp | CollectiveOp | AllocOp | FreeOp | WaitOp | DmaFenceOp


@dataclass(frozen=True)
class Program:
    """A static schedule for one socket; ``label`` names it in traces."""

    label: str
    ops: tuple[Op, ...] = field(default_factory=tuple)

    @staticmethod
    def of(label: str, ops: Sequence[Op]) -> Program:
        return Program(label, tuple(ops))


def np_dtype(name: str) -> np.dtype:
    """numpy dtype for one of the allowed dtype names (bfloat16 via ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)

