"""The host weight store: every expert's TP shards as files on the host.

Functional mode keeps real (small) expert weights here, one ``.npz`` per
expert and socket, written once from a seed; loading the composition and
switching an expert in read from these files — as the real CoE runtime links
independently compiled experts from host storage (docs/model.md §4 "Runtime").
The router's shards sit beside them: a model of the experts' shape (seed
``seed + n_experts``, after the experts' ``seed + e``) plus its expert-choice
head (``make_route_head``), replicated on every socket.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sn40l_emu.errors import EmuError
from sn40l_emu.workload import ModelConfig, ShardPlan
from sn40l_emu.workload.functional import shard_weights
from sn40l_emu.workload.reference import make_weights
from sn40l_emu.workload.router_head import HEAD_WEIGHT, make_route_head

ROUTER_DIR = "router"


class WeightStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, expert: int, socket: int) -> Path:
        return self.root / f"expert{expert:04d}" / f"socket{socket:02d}.npz"

    def router_path(self, socket: int) -> Path:
        return self.root / ROUTER_DIR / f"socket{socket:02d}.npz"

    def write_composition(self, model: ModelConfig, plan: ShardPlan, n_experts: int, seed: int) -> None:
        """Expert ``e`` gets weights from seed ``seed + e`` (deterministic), sharded for ``plan``;
        the router gets seed ``seed + n_experts`` and a head over the ``n_experts`` experts."""
        for e in range(n_experts):
            full = make_weights(model, seed + e)
            for r, s in enumerate(plan.group):
                p = self.path(e, s)
                p.parent.mkdir(parents=True, exist_ok=True)
                np.savez(p, **shard_weights(full, plan, r))  # type: ignore[arg-type]
        router = make_weights(model, seed + n_experts)
        head = make_route_head(model, n_experts, seed + n_experts)
        for r, s in enumerate(plan.group):
            p = self.router_path(s)
            p.parent.mkdir(parents=True, exist_ok=True)
            np.savez(p, **shard_weights(router, plan, r), **{HEAD_WEIGHT: head})  # type: ignore[arg-type]

    def read_router_shard(self, socket: int) -> dict[str, np.ndarray]:
        return self._read(self.router_path(socket), f"the router, socket {socket}")

    def read_shard(self, expert: int, socket: int) -> dict[str, np.ndarray]:
        return self._read(self.path(expert, socket), f"expert {expert}, socket {socket}")

    def _read(self, p: Path, what: str) -> dict[str, np.ndarray]:
        if not p.exists():
            raise EmuError(f"host weight store has no shard for {what} ({p})")
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def shard_bytes(self, expert: int, socket: int) -> int:
        return sum(a.nbytes for a in self.read_shard(expert, socket).values())
