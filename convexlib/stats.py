"""Correlations, bootstrap intervals, and layer positions / depth (SPEC §4.5, §4.6).

Per-layer results travel as a *wide* table: one row per (model, layer) with columns ``model``, ``n_layers``,
``layer`` (1..L) and one column per metric (e.g. ``convexity``, ``oooa``). :func:`to_wide` turns the tidy
per-layer CSV (``model, variant, layer, depth, metric, value, ...``) into it.

Correlations that cannot be computed (fewer than 3 points, or a constant input) are returned with ``r=None``
and a ``reason``; they are never reported as a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from .alignment import check_count, power_of_two_below

Pairing = Literal["2l", "2l-1"]

__all__ = [
    "Correlation",
    "Difference",
    "pearson",
    "paired_bootstrap_ci",
    "mean_std",
    "layer_positions",
    "normalized_depth",
    "to_wide",
    "matched_layer",
    "per_layer_correlation",
    "pooled_half_correlation",
    "per_model_correlation",
]

MIN_POINTS = 3


@dataclass(frozen=True)
class Correlation:
    """Pearson correlation with a bootstrap confidence interval.

    ``r``, ``ci_low`` and ``ci_high`` are None when the correlation is not computable; ``reason`` says why.
    """

    r: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    reason: str | None = None

    @property
    def computable(self) -> bool:
        return self.r is not None

    def __str__(self) -> str:
        if self.r is None:
            return f"not computable ({self.reason})"
        return f"R = {self.r:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}] (n = {self.n})"


def _pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    yc = y - y.mean()
    return float((xc @ yc) / np.sqrt((xc @ xc) * (yc @ yc)))


def pearson(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> Correlation:
    """Pearson r of paired values with a percentile bootstrap CI over resampled pairs.

    Parameters
    ----------
    x, y : array_like of shape (n,)
    n_boot : int
        Bootstrap resamples (0: no interval).
    ci : float
        Coverage of the interval.
    seed : int

    Returns
    -------
    Correlation
        Not computable (``r=None``) when n < 3 or either input is constant.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite (no NaN/inf)")
    n = len(x)
    if n < MIN_POINTS:
        return Correlation(None, None, None, n, f"needs at least {MIN_POINTS} points, got {n}")
    n_boot = check_count(n_boot, "n_boot", 0)
    if not 0 < ci < 1:
        raise ValueError(f"ci must be a coverage in (0, 1), e.g. 0.95, got {ci!r}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(None, None, None, n, "an input is constant")
    # r does not depend on the units; a power of two keeps products of 1e200 from overflowing, exactly
    x = x / power_of_two_below(float(np.abs(x).max()))
    y = y / power_of_two_below(float(np.abs(y).max()))
    r = _pearson_r(x, y)
    lo = hi = None
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(n_boot, n))
        xb, yb = x[idx], y[idx]
        xc = xb - xb.mean(axis=1, keepdims=True)
        yc = yb - yb.mean(axis=1, keepdims=True)
        den = np.sqrt((xc * xc).sum(1) * (yc * yc).sum(1))
        ok = den > 0
        rb = (xc * yc).sum(1)[ok] / den[ok]
        a = (1 - ci) / 2
        lo, hi = (float(v) for v in np.quantile(rb, [a, 1 - a]))
    return Correlation(r, lo, hi, n)


@dataclass(frozen=True)
class Difference:
    """A difference ``after - before`` with a paired bootstrap CI (same units as the inputs)."""

    delta: float
    ci_low: float
    ci_high: float
    n: int

    def __str__(self) -> str:
        return f"{self.delta:+.2f} [{self.ci_low:+.2f}, {self.ci_high:+.2f}]"


def paired_bootstrap_ci(
    before: Sequence[float] | np.ndarray,
    after: Sequence[float] | np.ndarray,
    *,
    groups: Sequence | np.ndarray | None = None,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> Difference:
    """Paired bootstrap CI for the difference of means ``mean(after) - mean(before)``.

    Pairs (before_i, after_i) are resampled together. With ``groups`` the statistic is the mean of the group
    means (as the convexity score is the mean of class means) and pairs are resampled within each group.

    Parameters
    ----------
    before, after : array_like of shape (n,)
        Paired values (e.g. the same sampled paths scored before and after a transform).
    groups : array_like of shape (n,), optional
    n_boot : int
    ci : float
    seed : int

    Returns
    -------
    Difference
    """
    a = np.asarray(before, dtype=np.float64).ravel()
    b = np.asarray(after, dtype=np.float64).ravel()
    if a.shape != b.shape or len(a) == 0:
        raise ValueError(f"before and after must be non-empty and of equal length, got {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("before and after must be finite")
    n_boot = check_count(n_boot, "n_boot", 1)
    if not 0 < ci < 1:
        raise ValueError(f"ci must be a coverage in (0, 1), e.g. 0.95, got {ci!r}")
    d = b - a
    rng = np.random.default_rng(seed)
    if groups is None:
        delta = float(d.mean())
        idx = rng.integers(0, len(d), size=(n_boot, len(d)))
        boots = d[idx].mean(axis=1)
    else:
        g = np.asarray(groups)
        if g.shape != d.shape:
            raise ValueError("groups must have one entry per pair")
        if pd.isna(g).any():
            raise ValueError("groups must not contain missing values (None/NaN)")
        parts = [d[g == k] for k in pd.unique(g)]
        delta = float(np.mean([p.mean() for p in parts]))
        boots = np.zeros(n_boot)
        for p in parts:
            boots += p[rng.integers(0, len(p), size=(n_boot, len(p)))].mean(axis=1)
        boots /= len(parts)
    q = (1 - ci) / 2
    lo, hi = np.quantile(boots, [q, 1 - q])
    return Difference(delta, float(lo), float(hi), len(d))


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and *sample* standard deviation (ddof=1), as in the tables' "avg ± std" rows (SPEC §4.6)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        raise ValueError("mean ± sample std needs at least 2 values")
    if not np.isfinite(v).all():
        raise ValueError(f"mean ± sample std needs finite values, got {v.tolist()}")
    return float(v.mean()), float(v.std(ddof=1))


# --------------------------------------------------------------------------------------------------------------
# layers and depth
# --------------------------------------------------------------------------------------------------------------


def _check_layer(layer: int, n_layers: int) -> None:
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if not 1 <= layer <= n_layers:
        raise ValueError(f"layer {layer} is out of range: blocks are numbered 1..{n_layers}")


def layer_positions(n_layers: int) -> dict[str, int]:
    """The transform tables' layer positions: first = 1, middle = L // 2, last = L (SPEC §3.3)."""
    if n_layers < 2:
        raise ValueError(f"first/middle/last need at least 2 layers, got {n_layers}")
    return {"first": 1, "middle": n_layers // 2, "last": n_layers}


def normalized_depth(layer: int | np.ndarray, n_layers: int) -> float | np.ndarray:
    """Depth (l - 1) / (L - 1) in [0, 1], the x axis of the Fig. 2 curves (first block 0, last block 1)."""
    arr = np.asarray(layer)
    if np.any(arr < 1) or np.any(arr > n_layers):
        raise ValueError(f"layers must lie in 1..{n_layers}")
    if n_layers == 1:
        return np.zeros_like(arr, dtype=float) if arr.ndim else 0.0
    out = (arr - 1) / (n_layers - 1)
    return float(out) if np.ndim(out) == 0 else out


def to_wide(tidy: pd.DataFrame, metrics: Sequence[str] = ("convexity", "oooa")) -> pd.DataFrame:
    """Tidy per-layer results -> one row per (model, layer) with one column per metric.

    Parameters
    ----------
    tidy : DataFrame with columns ``model``, ``layer``, ``metric``, ``value`` and ``n_layers`` (or ``depth``
        from which nothing is inferred: ``n_layers`` is required). Extra identifying columns (``variant``,
        ``size``, ``family``) are kept.
    metrics : the metrics to keep as columns.
    """
    need = {"model", "layer", "metric", "value", "n_layers"}
    missing = need - set(tidy.columns)
    if missing:
        raise ValueError(f"tidy table lacks columns {sorted(missing)}")
    keep = [c for c in ("model", "variant", "family", "size", "n_layers", "layer") if c in tidy.columns]
    sub = tidy[tidy["metric"].isin(metrics)]
    wide = sub.pivot_table(index=keep, columns="metric", values="value", aggfunc="mean").reset_index()
    wide.columns.name = None
    return wide


def matched_layer(base_layer: int, n_layers: int, base_layers: int, pairing: Pairing = "2l") -> int:
    """The layer of an ``n_layers`` model matched to ``base_layer`` of a ``base_layers`` model.

    With f = n_layers / base_layers (an integer), "2l" gives f*l (same relative depth at the block end: the
    paper's base l <-> large 2l) and "2l-1" gives f*l - (f - 1).
    """
    if n_layers % base_layers:
        raise ValueError(f"{n_layers} layers is not a multiple of the base model's {base_layers}")
    _check_layer(base_layer, base_layers)
    f = n_layers // base_layers
    if pairing == "2l":
        return f * base_layer
    if pairing == "2l-1":
        return f * base_layer - (f - 1)
    raise ValueError(f"pairing must be '2l' or '2l-1', got {pairing!r}")


def _xy(df: pd.DataFrame, x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    for col in (x, y):
        if col not in df.columns:
            raise ValueError(f"table lacks the column {col!r}")
    return df[x].to_numpy(float), df[y].to_numpy(float)


def per_layer_correlation(
    wide: pd.DataFrame,
    x: str = "oooa",
    y: str = "convexity",
    *,
    pairing: Pairing = "2l",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-layer Pearson R across models (Fig. 2c).

    For each block l of the shallowest model, every model contributes its matched layer (:func:`matched_layer`),
    and R is taken across models.

    Parameters
    ----------
    wide : DataFrame from :func:`to_wide` holding the models of one group (e.g. the six pretrained ones).

    Returns
    -------
    DataFrame with columns ``position`` (1..L_base), ``depth``, ``r``, ``ci_low``, ``ci_high``, ``n_models``,
    ``computable``, ``reason``.
    """
    if wide.empty:
        raise ValueError("no rows to correlate")
    base = int(wide["n_layers"].min())
    rows = []
    for l in range(1, base + 1):
        pts = []
        for _, g in wide.groupby("model", sort=True):
            L = int(g["n_layers"].iloc[0])
            m = matched_layer(l, L, base, pairing)
            hit = g[g["layer"] == m]
            if len(hit):
                pts.append(hit.iloc[0])
        sub = pd.DataFrame(pts)
        xs, ys = _xy(sub, x, y) if len(sub) else (np.array([]), np.array([]))
        c = pearson(xs, ys, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "position": l,
                "depth": normalized_depth(l, base),
                "r": c.r,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "n_models": c.n,
                "computable": c.computable,
                "reason": c.reason or "",
            }
        )
    return pd.DataFrame(rows)


def pooled_half_correlation(
    wide: pd.DataFrame, x: str = "oooa", y: str = "convexity", *, n_boot: int = 2000, seed: int = 0
) -> dict[str, Correlation]:
    """Pearson R over all (model, layer) points of the first and of the second half of depth (Fig. A.1).

    First half = layers 1..L/2 of each model, second half = layers L/2+1..L (SPEC §4.5).

    Returns
    -------
    dict with keys "first", "second" -> Correlation
    """
    first = wide["layer"] <= wide["n_layers"] // 2
    out = {}
    for name, mask in (("first", first), ("second", ~first)):
        xs, ys = _xy(wide[mask], x, y)
        out[name] = pearson(xs, ys, n_boot=n_boot, seed=seed)
    return out


def per_model_correlation(
    wide: pd.DataFrame, x: str = "oooa", y: str = "convexity", *, n_boot: int = 2000, seed: int = 0
) -> dict[str, Correlation]:
    """Pearson R across the layers of each model (Table A.7). Returns model -> Correlation."""
    out = {}
    for model, g in wide.groupby("model", sort=False):
        xs, ys = _xy(g.sort_values("layer"), x, y)
        out[str(model)] = pearson(xs, ys, n_boot=n_boot, seed=seed)
    return out
