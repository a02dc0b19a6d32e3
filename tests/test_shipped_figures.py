"""Each shipped figure that is not the demo's or a study's run output is what its one documented command draws
now, byte for byte (the requirements pin matplotlib): a figure cannot go stale without this test saying so.

- pics/gradients.png: `make figures` (python -m src.tools.plot_gradients --out pics/gradients.png);
- pics/strength_gap.png: python -m src.experiments.reproduce --analyze results/strength
  --settings full,0.4left,singlelabel (docs/results_strength.md), drawn from the exported runs only.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*argv: str) -> None:
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_gradients_figure_is_what_make_figures_draws(tmp_path):
    makefile = (ROOT / "Makefile").read_text()
    assert "-m src.tools.plot_gradients --out pics/gradients.png" in makefile
    _run("-m", "src.tools.plot_gradients", "--out", str(tmp_path / "gradients.png"))
    assert (tmp_path / "gradients.png").read_bytes() == (ROOT / "pics" / "gradients.png").read_bytes()


def test_strength_gap_figure_is_what_its_analysis_command_draws(tmp_path):
    doc = (ROOT / "docs" / "results_strength.md").read_text()
    assert "-m src.experiments.reproduce --analyze results/strength --settings full,0.4left,singlelabel" in doc
    export = tmp_path / "strength"
    shutil.copytree(ROOT / "results" / "strength", export)  # the command writes its tables into the export
    _run("-m", "src.experiments.reproduce", "--analyze", str(export), "--settings", "full,0.4left,singlelabel",
         "--pics", str(tmp_path / "pics"))
    assert (tmp_path / "pics" / "strength_gap.png").read_bytes() == (ROOT / "pics" / "strength_gap.png").read_bytes()
