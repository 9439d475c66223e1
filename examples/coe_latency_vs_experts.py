"""README figures `coe_latency_b8_t20.png` and `coe_breakdown_<platform>_b8_t20.png`.

Batch latency of a Composition of Experts vs the number of experts on each
platform (batch 8, 20 output tokens, Llama2-7B experts), and where the time
goes (router, expert switching, expert decode). Run:

    python examples/coe_latency_vs_experts.py            # the README's sweep (about a minute)
    python examples/coe_latency_vs_experts.py --quick    # tiny model, seconds
"""

from __future__ import annotations

import _common

import sn40l_emu

args = _common.parse(__doc__.splitlines()[0])
model, experts, prompt = ("tiny-llama", [1, 10, 50], 4) if args.quick else ("llama2-7b", [1, 10, 25, 50, 100, 150], 128)
batch, tokens = 8, 20

with sn40l_emu.Emulator(backend="local") as emu:
    df = emu.run_coe(profile=["sn40l", "dgx-a100", "dgx-h100"], experts=experts, batch=[batch],
                     tokens=[tokens], model=model, prompt_len=prompt)

# every figure is the mean over the seeds (default 5); *_ci95_ns is the 95 % confidence interval's half-width
print(df[["platform", "experts", "total_ns", "total_ci95_ns", "switch_ns", "hbm_misses", "oom"]].to_string(index=False))

plt = _common.pyplot()
fig, ax = plt.subplots(figsize=(7, 4))
for platform, g in df.groupby("platform", sort=False):
    ok = g[~g["oom"]]
    ax.errorbar(ok["experts"], ok["total_ns"] / 1e6, yerr=ok["total_ci95_ns"].astype(float).fillna(0) / 1e6,
                fmt="o-", capsize=3, label=platform)
ax.set_xlabel("experts in the composition")
ax.set_ylabel("batch latency (ms), mean ± 95 % CI")
ax.set_yscale("log")
ax.set_title(f"CoE batch latency, batch {batch}, {tokens} output tokens ({model})")
ax.grid(alpha=0.3)
ax.legend()
_common.save(fig, args.out, f"coe_latency_b{batch}_t{tokens}.png")

# one breakdown per platform, on one shared y-scale so they compare
ymax = float(df["total_ns"].max()) / 1e6 * 1.05
for platform, g in df.groupby("platform", sort=False):
    ok = g[~g["oom"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bottom = None
    for part in ("router_ns", "switch_ns", "program_load_ns", "argument_load_ns", "host_ns", "expert_ns"):
        vals = ok[part] / 1e6
        ax.bar([str(e) for e in ok["experts"]], vals, bottom=bottom, label=part.removesuffix("_ns"))
        bottom = vals if bottom is None else bottom + vals
    ax.set_ylim(0, ymax)
    ax.set_xlabel("experts in the composition")
    ax.set_ylabel("batch latency (ms)")
    ax.set_title(f"{platform}: where the time goes (batch {batch}, {tokens} tokens)")
    ax.legend()
    _common.save(fig, args.out, f"coe_breakdown_{platform}_b{batch}_t{tokens}.png")
