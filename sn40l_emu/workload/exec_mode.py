"""Execution modes: how the framework operators of a model become kernels.

The modes are the comparison the SN40L paper makes (docs/model.md §1 "Kernel
launch", §5): unfused vs fused decoders, software vs hardware orchestration,
and the DGX GPU baselines. A registry keyed by the Enum gives each mode its
traits, so builders never branch on names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from sn40l_emu.program import Launch


class ExecMode(str, Enum):
    UNFUSED = "unfused"  # every framework operator its own SO kernel, intermediates via HBM
    FUSED_SO = "fused_so"  # one pipelined kernel per decoder layer, host-launched
    FUSED_HO = "fused_ho"  # the same kernels run from the static AGCU schedule
    GPU = "gpu"  # a DGX: ~12 CUDA kernels per decoder layer + two NCCL all-reduces


@dataclass(frozen=True)
class ModeTraits:
    """``fused``: operators become stages of one kernel; ``launch``: how a kernel starts."""

    fused: bool
    launch: Launch


MODE_TRAITS: Mapping[ExecMode, ModeTraits] = MappingProxyType({
    ExecMode.UNFUSED: ModeTraits(fused=False, launch=Launch.SO),
    ExecMode.FUSED_SO: ModeTraits(fused=True, launch=Launch.SO),
    ExecMode.FUSED_HO: ModeTraits(fused=True, launch=Launch.HO),
    ExecMode.GPU: ModeTraits(fused=False, launch=Launch.GPU),
})
