"""Transformer workloads: shapes, the TP sharding plan, per-socket programs, numpy reference.

Data flows one way: :mod:`model_config` (a HF ``config.json``) ->
:mod:`sharding` (what each socket holds) -> :mod:`graph` (the operators a
socket runs for a :class:`Step`, with their costs, from :mod:`operators` and
:mod:`tiling`) -> :mod:`programs` (kernels for an :class:`ExecMode`) and
:mod:`memory_plan`. :mod:`reference` and :mod:`functional` give the same
model real numbers. Nothing here imports the socket actor or Ray.
"""

from sn40l_emu.workload.exec_mode import ExecMode
from sn40l_emu.workload.memory_plan import memory_plan
from sn40l_emu.workload.model_config import ModelConfig, load_model, shipped_models
from sn40l_emu.workload.placement import Placement
from sn40l_emu.workload.programs import (
    build_decode_program,
    build_group_programs,
    build_prefill_program,
    build_program,
)
from sn40l_emu.workload.sharding import ShardPlan, make_plan
from sn40l_emu.workload.step import Phase, Step

__all__ = [
    "ExecMode",
    "ModelConfig",
    "Phase",
    "Placement",
    "ShardPlan",
    "Step",
    "build_decode_program",
    "build_group_programs",
    "build_prefill_program",
    "build_program",
    "load_model",
    "make_plan",
    "memory_plan",
    "shipped_models",
]
