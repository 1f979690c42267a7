"""Claim checks on hand-made results: each verdict follows its stated criterion."""

from __future__ import annotations

import pandas as pd

from convexlib import report
from convexlib.stats import Correlation


def _wide(conv: dict, oooa: dict) -> pd.DataFrame:
    rows = []
    for m in conv:
        L = len(conv[m])
        for l in range(1, L + 1):
            rows.append({"model": m, "label": m, "group": "pretrained", "n_layers": L, "layer": l,
                         "depth": (l - 1) / (L - 1), "convexity": conv[m][l - 1], "oooa": oooa[m][l - 1]})
    return pd.DataFrame(rows)


def test_rising_convexity_and_mid_peak():
    w = _wide({"a": [10, 20, 30, 40], "b": [5, 9, 12, 11]}, {"a": [35, 40, 39, 36], "b": [36, 41, 43, 37]})
    assert report.claim_convexity_rises_first_half(w).status == report.REPRODUCED
    assert report.claim_oooa_peaks_mid(w).status == report.REPRODUCED
    w2 = _wide({"a": [30, 20, 25, 40]}, {"a": [35, 36, 37, 40]})
    assert report.claim_convexity_rises_first_half(w2).status == report.NOT_REPRODUCED  # block 2 < block 1
    assert report.claim_oooa_peaks_mid(w2).status == report.NOT_REPRODUCED  # peak at the last block


def test_correlation_claims():
    c = lambda r, lo=-1.0: Correlation(r, lo, 1.0, 54)  # noqa: E731
    halves = {("pretrained", "first"): c(0.91, 0.8), ("pretrained", "second"): c(0.40),
              ("finetuned", "first"): c(0.91, 0.8), ("finetuned", "second"): c(-0.54)}
    assert report.claim_first_half_correlation(halves).status == report.REPRODUCED
    assert report.claim_second_half_weaker(halves).status == report.REPRODUCED
    halves[("finetuned", "second")] = c(0.2)
    assert report.claim_second_half_weaker(halves).status == report.NOT_REPRODUCED
    only = {("pretrained", "first"): Correlation(None, None, None, 2, "needs at least 3 points, got 2")}
    assert report.claim_first_half_correlation(only).status == report.NOT_COMPUTABLE


def test_table_claims_against_paper_numbers():
    tabs = report.paper_reference("tables")
    t1 = tabs[(tabs["table"].astype(str) == "1")]
    rows = pd.DataFrame({
        "model": t1[t1.metric == "oooa"]["model"].to_numpy(), "position": "last", "group": "pretrained",
        "oooa_delta": t1[t1.metric == "oooa"]["delta"].to_numpy(),
        "oooa_delta_ci_low": t1[t1.metric == "oooa"]["delta"].to_numpy() - 1,
        "oooa_delta_ci_high": t1[t1.metric == "oooa"]["delta"].to_numpy() + 1,
        "convexity_delta": t1[t1.metric == "convexity"]["delta"].to_numpy(),
        "convexity_delta_ci_low": 0.0, "convexity_delta_ci_high": 0.0,
    })
    # the paper's own Table 1: OOOA up everywhere, convexity up in 5 of 6
    assert report.claim_transform_raises_oooa(rows).status == report.REPRODUCED
    v = report.claim_transform_raises_convexity(rows)
    assert v.status == report.REPRODUCED and v.evidence.startswith("5 of 6 up")
    t2 = tabs[tabs["table"].astype(str) == "2"]
    table2 = pd.DataFrame({"model": t2[t2.metric == "convexity"]["model"].to_numpy(),
                           "convexity Δft": t2[t2.metric == "convexity"]["delta"].to_numpy(),
                           "OOOA Δft": t2[t2.metric == "oooa"]["delta"].to_numpy()})
    assert report.claim_finetuning_raises_convexity(table2).status == report.REPRODUCED
    assert report.claim_finetuning_oooa_inconsistent(table2).status == report.REPRODUCED
    assert report.claim_finetuning_oooa_inconsistent(table2.iloc[:1]).status == report.NOT_COMPUTABLE
    assert report.claim_transform_raises_oooa(None).status == report.NOT_COMPUTABLE
