"""Bus bandwidth of an 8-socket all-reduce vs message size, ring vs one-shot (nccl-tests style).

    python examples/allreduce_busbw.py            # 8 B .. 1 GiB, symbolic payloads
    python examples/allreduce_busbw.py --quick    # 1 KiB .. 1 MiB
"""

from __future__ import annotations

import _common

import sn40l_emu

args = _common.parse(__doc__.splitlines()[0])
hi = "1M" if args.quick else "1G"

plt = _common.pyplot()
fig, ax = plt.subplots(figsize=(7, 4))
with sn40l_emu.Emulator(profile="sn40l", backend="local") as emu:
    for algo in ("ring", "oneshot"):
        df = emu.run_allreduce_bench(minbytes="1K", maxbytes=hi, stepfactor=8, algo=algo, timing_only=True,
                                     iters=1, warmup=0)
        print(df[["size_bytes", "algo", "time_us", "busbw_gbps"]].to_string(index=False))
        ax.plot(df["size_bytes"], df["busbw_gbps"], "o-", label=algo)
ax.set_xscale("log", base=2)
ax.set_xlabel("message size (B)")
ax.set_ylabel("bus bandwidth (GB/s)")
ax.set_title("all-reduce over 8 SN40L sockets (virtual time)")
ax.grid(alpha=0.3)
ax.legend()
_common.save(fig, args.out, "allreduce_busbw.png")
