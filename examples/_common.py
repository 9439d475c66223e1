"""Shared by the example scripts: the ``--quick`` / ``--out`` options and figure saving.

``--quick`` swaps in a tiny model and a short sweep so the test suite can run
every example in seconds; without it each script reproduces its README figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def parse(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny model, short sweep (what the tests run)")
    p.add_argument("--out", default="runs/examples", help="where the figures go (default: runs/examples)")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def save(fig: Any, out: str, name: str) -> Path:
    import matplotlib.pyplot as plt

    path = Path(out) / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
