"""Every script in examples/ and the notebook run (in their quick mode) and draw their figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs full experiments or commands: the full suite has it, the fast tier does not.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "examples").glob("*.py") if not p.name.startswith("_"))
FIGURES = {
    "coe_latency_vs_experts.py": ["coe_latency_b8_t20.png", "coe_breakdown_sn40l_b8_t20.png"],
    "tp_scaling.py": ["tp_scaling_decode.png"],
    "allreduce_busbw.py": ["allreduce_busbw.png"],
    "capacity.py": ["capacity.png"],
    "inject_coe.py": [],  # prints its report (tests/test_inject_api.py checks it)
    "inject_link_down_mid_allreduce.py": [],
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["MPLBACKEND"] = "Agg"
    return env


def test_every_script_has_its_figures_listed() -> None:
    assert {p.name for p in SCRIPTS} == set(FIGURES)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_script_runs(script: Path, tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path)], cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in FIGURES[script.name]:
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 5_000, name


def test_notebook_runs(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    os.environ.setdefault("MPLBACKEND", "Agg")
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), saved or ""])
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    assert (tmp_path / "quickstart_coe.png").stat().st_size > 5_000
    outputs = "".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "SN40L speedup over DGX A100" in outputs
