"""Per-socket static programs for a prefill or one decode step, in each execution mode.

The operator graph (:mod:`graph`) is lowered into kernels by the mode:

* ``UNFUSED`` / ``GPU``: every framework operator is its own kernel
  (``fused=False``, one stage), launched by the host (``Launch.SO``) or as a
  CUDA kernel (``Launch.GPU``); every input and output goes through memory as
  an ``ACTIVATIONS`` stream. That is 12 kernels per decoder layer plus two
  all-reduces, the "about a dozen" of docs/model.md §5.
* ``FUSED_SO`` / ``FUSED_HO``: the sections of one kernel that no collective
  separates are one ``KernelOp`` (``fused=True``) whose stages are the
  operators; only weights, KV cache and the kernel's own input and output
  activations are streams. A kernel cut by collectives becomes several
  ``KernelOp``s: the first launched (SO or HO), the continuations
  ``Launch.NONE``, since the collectives run over P2P inside the kernel.

Timing mode carries no functions; ``functional=True`` adds ``fn``, ``inputs``,
``outputs`` and ``attrs`` (see :mod:`functional` for the tensor-store
contract) and changes nothing else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from sn40l_emu.errors import ConfigError, ShardingError
from sn40l_emu.program import (
    CollectiveOp,
    KernelOp,
    Launch,
    MemStream,
    Op,
    Program,
    Stage,
    StreamKind,
)
from sn40l_emu.workload import functional as fk
from sn40l_emu.workload.exec_mode import MODE_TRAITS, ExecMode, ModeTraits
from sn40l_emu.workload.graph import ON_CHIP, CollectiveSpec, Item, Section, socket_graph
from sn40l_emu.workload.model_config import ModelConfig
from sn40l_emu.workload.operators import OpSpec
from sn40l_emu.workload.placement import HBM_ONLY, Placement
from sn40l_emu.workload.sharding import ShardPlan
from sn40l_emu.workload.step import Step

COLLECTIVE_DTYPE = "bfloat16"


def build_program(
    model: ModelConfig,
    plan: ShardPlan,
    step: Step,
    mode: ExecMode,
    rank_index: int,
    *,
    functional: bool = False,
    placement: Placement = HBM_ONLY,
) -> Program:
    """The program of socket ``plan.group[rank_index]`` for ``step`` in ``mode``."""
    if plan.model != model:
        raise ShardingError(f"plan was made for {plan.model.name}, not {model.name}")
    if not 0 <= rank_index < plan.tp:
        raise ShardingError(f"rank_index {rank_index} is outside the TP group of {plan.tp}")
    if step.total_len > model.max_position_embeddings:
        raise ConfigError(
            "context_len", step.total_len,
            f"at most max_position_embeddings={model.max_position_embeddings} for {model.name}",
        )
    traits = MODE_TRAITS[mode]
    graph = socket_graph(plan, step, rank_index)
    lower = _lower_fused if traits.fused else _lower_unfused
    ops = lower(graph, plan, traits, functional, placement)
    label = f"{model.name}/{step.label}/{mode.value}/tp{plan.tp}/s{plan.group[rank_index]}"
    return Program.of(label, ops)


def build_prefill_program(
    model: ModelConfig, plan: ShardPlan, rank_index: int, batch: int, prompt_len: int,
    mode: ExecMode, *, functional: bool = False, placement: Placement = HBM_ONLY,
) -> Program:
    """Prefill of ``batch`` prompts of ``prompt_len`` tokens (logits of the last token)."""
    return build_program(model, plan, Step.prefill(batch, prompt_len), mode, rank_index,
                         functional=functional, placement=placement)


def build_decode_program(
    model: ModelConfig, plan: ShardPlan, rank_index: int, batch: int, context_len: int,
    mode: ExecMode, *, functional: bool = False, placement: Placement = HBM_ONLY,
) -> Program:
    """One decode step of ``batch`` sequences with ``context_len`` tokens already cached."""
    return build_program(model, plan, Step.decode(batch, context_len), mode, rank_index,
                         functional=functional, placement=placement)


def build_group_programs(
    model: ModelConfig, plan: ShardPlan, step: Step, mode: ExecMode, *,
    functional: bool = False, placement: Placement = HBM_ONLY,
) -> dict[int, Program]:
    """Programs of every socket of the plan's group, keyed by global socket index."""
    return {
        socket: build_program(model, plan, step, mode, rank, functional=functional,
                              placement=placement)
        for rank, socket in enumerate(plan.group)
    }


# ---- lowering ---------------------------------------------------------------
def _lower_unfused(
    graph: tuple[Item, ...], plan: ShardPlan, traits: ModeTraits, functional: bool,
    placement: Placement,
) -> list[Op]:
    out: list[Op] = []
    for item in graph:
        if isinstance(item, CollectiveSpec):
            out.append(_collective(item, plan, functional))
            continue
        for op in item.ops:
            streams = _streams(placement, op.weight_bytes, op.kv_read_bytes, op.kv_write_bytes,
                               op.act_read_bytes, op.act_write_bytes)
            kernel = KernelOp(op.name, (Stage(op.name, op.flops, op.buffer_bytes),), streams,
                              traits.launch, fused=False)
            if functional:
                kernel = replace(kernel, fn=op.fn, inputs=op.inputs, outputs=op.outputs,
                                 attrs=op.attrs)
            out.append(kernel)
    return out


def _lower_fused(
    graph: tuple[Item, ...], plan: ShardPlan, traits: ModeTraits, functional: bool,
    placement: Placement,
) -> list[Op]:
    parts_per_kernel = Counter(i.kernel for i in graph if isinstance(i, Section))
    out: list[Op] = []
    pending: list[Section] = []
    launched: set[str] = set()

    def flush() -> None:
        if not pending:
            return
        kernel = pending[0].kernel
        launch = Launch.NONE if kernel in launched else traits.launch
        launched.add(kernel)
        whole = len(pending) == parts_per_kernel[kernel]
        name = kernel if whole else f"{kernel}.{'+'.join(s.part for s in pending)}"
        out.append(_fused_kernel(name, tuple(pending), launch, functional, placement))
        pending.clear()

    for item in graph:
        if isinstance(item, CollectiveSpec):
            flush()
            out.append(_collective(item, plan, functional))
        else:
            if pending and pending[0].kernel != item.kernel:
                flush()
            pending.append(item)
    flush()
    return out


def _fused_kernel(
    name: str, sections: tuple[Section, ...], launch: Launch, functional: bool,
    placement: Placement,
) -> KernelOp:
    specs = tuple(op for s in sections for op in s.ops)
    streams = _streams(
        placement,
        sum(op.weight_bytes for op in specs),
        sum(op.kv_read_bytes for op in specs),
        sum(op.kv_write_bytes for op in specs),
        sum(s.fused_act_read_bytes for s in sections),
        sum(s.fused_act_write_bytes for s in sections),
    )
    stages = tuple(Stage(op.name, op.flops, op.buffer_bytes) for op in specs)
    kernel = KernelOp(name, stages, streams, launch, fused=True)
    return _with_fused_fn(kernel, specs) if functional else kernel


def _streams(
    placement: Placement, weight_bytes: int, kv_read_bytes: int, kv_write_bytes: int,
    act_read_bytes: int, act_write_bytes: int,
) -> tuple[MemStream, ...]:
    """Non-empty off-chip streams, in a fixed order: weights, KV read, KV write, act read/write."""
    candidates = (
        MemStream(placement.weights, weight_bytes, StreamKind.WEIGHTS),
        MemStream(placement.kv, kv_read_bytes, StreamKind.KV),
        MemStream(placement.kv, kv_write_bytes, StreamKind.KV, write=True),
        MemStream(placement.activations, act_read_bytes, StreamKind.ACTIVATIONS),
        MemStream(placement.activations, act_write_bytes, StreamKind.ACTIVATIONS, write=True),
    )
    return tuple(s for s in candidates if s.size_bytes > 0)


def _collective(spec: CollectiveSpec, plan: ShardPlan, functional: bool) -> CollectiveOp:
    return CollectiveOp(spec.name, spec.kind, plan.group, spec.shape, COLLECTIVE_DTYPE,
                        buffer=spec.buffer if functional else "")


def _with_fused_fn(kernel: KernelOp, specs: tuple[OpSpec, ...]) -> KernelOp:
    """One :func:`functional.fused_section` call running every operator of the kernel."""
    reads: list[str] = []
    writes: list[str] = []
    for op in specs:
        reads += [n for n in op.inputs if n not in writes and n not in reads]
        writes += [n for n in op.outputs if n not in writes]
    outputs = tuple(n for n in writes if n not in ON_CHIP)
    steps = tuple((op.fn, op.inputs, op.outputs, op.attrs) for op in specs)
    attrs = (("names", tuple(reads)), ("steps", steps), ("outputs", outputs))
    return replace(kernel, fn=fk.fused_section, inputs=tuple(reads), outputs=outputs, attrs=attrs)
