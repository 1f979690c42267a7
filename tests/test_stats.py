"""Correlation and depth helpers, checked on hand cases and on the paper's own digitised values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from convexlib import stats

PAPER = Path(__file__).resolve().parents[1] / "reference"


def test_pearson_matches_scipy_and_ci_contains_r():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = 0.6 * x + rng.normal(size=40)
    c = stats.pearson(x, y, n_boot=500, seed=1)
    assert c.r == pytest.approx(sps.pearsonr(x, y)[0])
    assert c.ci_low < c.r < c.ci_high


def test_pearson_not_computable():
    assert stats.pearson([1, 2], [3, 4]).r is None
    c = stats.pearson([1, 1, 1], [1, 2, 3])
    assert not c.computable and "constant" in c.reason
    assert "not computable" in str(c)
    with pytest.raises(ValueError, match="finite"):
        stats.pearson([1, np.nan, 2], [1, 2, 3])


def test_paired_bootstrap():
    before = np.array([1.0, 2.0, 3.0, 4.0])
    after = before + np.array([1.0, 1.0, 1.0, 1.0])
    d = stats.paired_bootstrap_ci(before, after, n_boot=200)
    assert d.delta == 1.0 and d.ci_low == 1.0 and d.ci_high == 1.0
    g = np.array([0, 0, 1, 1])
    d2 = stats.paired_bootstrap_ci(before, before + np.array([0.0, 0.0, 2.0, 4.0]), groups=g, n_boot=500)
    assert d2.delta == pytest.approx((0 + 3) / 2)
    assert d2.ci_low <= d2.delta <= d2.ci_high


def test_mean_std_is_sample_std():
    # Table 1 OOOA deltas: printed +13.7 ± 1.0 (SPEC §4.6)
    m, s = stats.mean_std([15.4, 13.8, 13.1, 12.4, 13.6, 13.6])
    assert m == pytest.approx(13.65) and s == pytest.approx(0.995, abs=1e-3)


def test_layer_positions_and_depth():
    assert stats.layer_positions(12) == {"first": 1, "middle": 6, "last": 12}
    assert stats.layer_positions(24) == {"first": 1, "middle": 12, "last": 24}
    assert stats.normalized_depth(1, 12) == 0.0 and stats.normalized_depth(12, 12) == 1.0
    np.testing.assert_allclose(stats.normalized_depth(np.array([1, 13, 24]), 24), [0, 12 / 23, 1])
    with pytest.raises(ValueError):
        stats.normalized_depth(0, 12)
    assert stats.matched_layer(3, 24, 12, "2l") == 6
    assert stats.matched_layer(3, 24, 12, "2l-1") == 5
    assert stats.matched_layer(3, 12, 12, "2l-1") == 3


def test_per_layer_correlation_not_computable_with_two_models():
    wide = pd.DataFrame(
        {"model": ["a"] * 2 + ["b"] * 2, "n_layers": 2, "layer": [1, 2, 1, 2], "oooa": [1, 2, 3, 4.0],
         "convexity": [2, 3, 1, 5.0]}
    )
    out = stats.per_layer_correlation(wide)
    assert not out["computable"].any() and out["r"].isna().all()
    assert out["reason"].str.contains("at least 3").all()


def _paper_wide() -> pd.DataFrame:
    d = pd.read_csv(PAPER / "fig2_layers.csv")
    d["n_layers"] = d["size"].map({"base": 12, "large": 24})
    d["metric"] = d["figure"].map({"2a": "convexity", "2b": "oooa"})
    d["model"] = d["model"] + " " + d["variant"] + " " + d["size"]
    return stats.to_wide(d)


def test_recovers_published_fig_a1_from_digitised_values():
    wide = _paper_wide()
    fig = pd.read_csv(PAPER / "figA1.csv")
    for _, row in fig.iterrows():
        halves = stats.pooled_half_correlation(wide[wide["variant"] == row["group"]], n_boot=0)
        assert halves[row["half"]].n == 54
        assert halves[row["half"]].r == pytest.approx(row["R"], abs=0.02)


def test_per_model_correlation_beit_row_of_table_a7():
    # SPEC §4.5: the digitised curves reproduce the BEiT row of Table A.7 (0.93/0.97/0.70/0.47 vs 0.99/0.98/0.70/0.46)
    per = stats.per_model_correlation(_paper_wide(), n_boot=0)
    assert per["BEiT finetuned base"].r == pytest.approx(0.70, abs=0.02)
    assert per["BEiT finetuned large"].r == pytest.approx(0.46, abs=0.02)
    assert per["BEiT pretrained large"].r == pytest.approx(0.98, abs=0.02)


def test_pearson_is_unit_free_and_checks_its_options():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=30), rng.normal(size=30)
    base = stats.pearson(x + 0.5 * y, y, n_boot=200, seed=1)
    for f in (1e200, 1e-200):
        big = stats.pearson((x + 0.5 * y) * f, y * f, n_boot=200, seed=1)
        assert big.r == pytest.approx(base.r, abs=1e-12)
        assert big.ci_low == pytest.approx(base.ci_low, abs=1e-9) and big.ci_high == pytest.approx(base.ci_high, abs=1e-9)
    with pytest.raises(ValueError, match="ci must be"):
        stats.pearson(x, y, ci=95)
    with pytest.raises(ValueError, match="n_boot"):
        stats.pearson(x, y, n_boot=2.5)
