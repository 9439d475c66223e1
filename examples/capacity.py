"""How many Llama2-7B experts fit one node, per platform (the README's capacity numbers).

    python examples/capacity.py [--quick]
"""

from __future__ import annotations

import _common

import sn40l_emu

args = _common.parse(__doc__.splitlines()[0])

with sn40l_emu.Emulator(backend="local") as emu:
    df = emu.run_capacity(profile=["sn40l", "dgx-a100", "dgx-h100"], experts=[1, 50, 150, 1000])
print(df.to_string(index=False))

per_node = df.drop_duplicates("platform")
plt = _common.pyplot()
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.bar(per_node["platform"], per_node["experts_per_node"], label="per node")
ax.bar(per_node["platform"], per_node["experts_in_hbm"], label="in HBM at once")
ax.set_yscale("log")
ax.set_ylabel("Llama2-7B experts")
ax.set_title("experts one node holds (batch 8, 328 tokens of KV reserved)")
ax.legend()
_common.save(fig, args.out, "capacity.png")
