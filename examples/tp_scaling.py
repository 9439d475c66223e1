"""The README's tensor-parallel scaling figure: decode latency per token vs TP degree, per mode.

    python examples/tp_scaling.py            # Llama2-7B, TP 1..16 (about a minute)
    python examples/tp_scaling.py --quick    # tiny model, TP 1 and 8
"""

from __future__ import annotations

import _common

import sn40l_emu

args = _common.parse(__doc__.splitlines()[0])
model, tps = ("tiny-llama", [1, 8]) if args.quick else ("llama2-7b", [1, 2, 4, 8, 16])

with sn40l_emu.Emulator(profile="sn40l", backend="local") as emu:
    df = emu.run_tp_scaling(model=model, tp=tps, phase=["decode"], mode=["unfused", "fused-so", "fused-ho"])

print(df[["tp", "mode", "latency_ns", "breakdown_ns.weights", "breakdown_ns.collectives"]].to_string(index=False))

plt = _common.pyplot()
fig, ax = plt.subplots(figsize=(7, 4))
for mode, g in df.groupby("mode", sort=False):
    ax.plot(g["tp"], g["latency_ns"] / 1e3, "o-", label=mode)
ax.set_xscale("log", base=2)
ax.set_xticks(tps, [str(t) for t in tps])
ax.set_xlabel("tensor-parallel degree (sockets)")
ax.set_ylabel("decode step latency (us)")
ax.set_title(f"{model} decode, batch 1, context 128, on the SN40L")
ax.grid(alpha=0.3)
ax.legend()
_common.save(fig, args.out, "tp_scaling_decode.png")
