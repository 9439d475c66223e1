"""Collectives (ring, one-shot, tree) written once against Transport, and their selector."""

from sn40l_emu.collectives.api import all_gather, all_reduce, broadcast, reduce_scatter
from sn40l_emu.collectives.selector import predict_ns, select_algo

__all__ = ["all_gather", "all_reduce", "broadcast", "predict_ns", "reduce_scatter", "select_algo"]
