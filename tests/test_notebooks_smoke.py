"""Smoke test: every notebook runs end to end with the `tiny` profile and writes its outputs (issue 8).

Runs the real runner in a subprocess with a fresh cache, so it exercises papermill, jupytext, the kernel and every
notebook cell. Takes about 3-4 minutes on 2 cores; needs the real data root (skipped without it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from convexlib.paths import figures_dir
from convexlib.runner import notebook_paths

EXPECTED = {
    "01_layerwise": ["layerwise.csv", "layerwise.md", "fig2ab_layerwise.png", "fig2ab_layerwise.pdf"],
    "02_correlation": ["fig2c_per_layer_correlation.csv", "fig2c_per_layer_correlation.png",
                       "figA1_pooled_correlation.csv", "figA1_scatter.png", "tableA7_per_model_correlation.csv",
                       "tableA7_per_model_correlation.md"],
    "03_transform": ["transform_all.csv", "table1.csv", "table1.md", "tableA2.csv", "tableA3.csv",
                     "transform_deltas.png"],
    "04_finetuning": ["table2.csv", "table2.md", "finetune_layerwise.csv", "finetune_layerwise.png"],
    "05_report": ["report_claims.csv", "report_claims.md", "report_vs_paper.csv", "report_seeds.csv",
                  "report_seeds.png", "report_robustness.csv", "report_overlay.png"],
    "06_your_model": ["byo_layerwise.csv", "byo_fig2.png"],
}


@pytest.mark.timeout(900)
def test_all_notebooks_run_with_tiny_profile(data_root, tmp_path):
    env = dict(os.environ, CONVEXLIB_DATA=str(data_root), CONVEXLIB_CACHE=str(tmp_path / "cache"),
               MPLBACKEND="Agg", HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "convexlib.runner", "--profile", "tiny", "--no-progress",
                           "--timeout", "600"], env=env, capture_output=True, text=True, timeout=880)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = figures_dir("tiny", create=False)
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    names = [p.stem for p in notebook_paths()]
    for nb in names:
        for f in EXPECTED.get(nb, []):
            path = out / f
            assert path.is_file() and path.stat().st_size > 0, f"{nb} did not write {f}"
            assert manifest[f]["notebook"] == nb
            assert manifest[f]["params"]["profile"] == "tiny"
    assert set(EXPECTED) <= set(names) | {"06_your_model"}
    assert elapsed < 300, f"the tiny profile took {elapsed:.0f} s (budget 300 s)"
