"""Which memory tier each class of tensor lives in, shared by programs and memory plans.

HBM is the default home of everything that fits (docs/model.md §1 "Memory tiers");
a CoE expert that runs straight from DDR, or activations spilled to DDR, are
expressed by changing one field, so the program's streams and the memory
plan's allocations always agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from sn40l_emu.program import Tier


@dataclass(frozen=True)
class Placement:
    weights: Tier = Tier.HBM
    kv: Tier = Tier.HBM
    activations: Tier = Tier.HBM


HBM_ONLY = Placement()
