"""The reproduction report: our numbers beside the paper's, the paper's claims as executable checks, seeds.

* :func:`paper_reference` — the paper's published values (``reference/*.csv``).
* :func:`check_claims` — each qualitative claim of the paper (SPEC §1 and §5.4–5.6) as a check on a run's
  results, with a verdict ``reproduced`` / ``not reproduced`` / ``not computable`` and the numbers behind it.
  The criteria are stated in each claim's ``criterion`` and are fixed before looking at any result.
* :func:`seed_summary` — mean and spread of repeated runs with different seeds (image draws, path sampling).
* :func:`robustness` — correlation of the cosine-distance convexity with the Euclidean one, and of the
  Euclidean OOOA with the cosine one, across all layers and models (paper App. A.3: 0.9931 and 0.9989).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .paths import repo_root
from .stats import pearson

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_COMPUTABLE = "not computable"


@dataclass(frozen=True)
class Verdict:
    """One checked claim."""

    claim: str
    source: str
    criterion: str
    status: str
    evidence: str
    numbers: dict = field(default_factory=dict)

    def as_row(self) -> dict:
        d = asdict(self)
        d.pop("numbers")  # the evidence states them
        return d


def paper_reference(name: str) -> pd.DataFrame:
    """A CSV of the paper's published values from ``reference/`` (e.g. ``"tables"``, ``"fig2_layers"``)."""
    path = repo_root() / "reference" / f"{name}.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; the reference folder ships with the repository")
    return pd.read_csv(path)


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


# --------------------------------------------------------------------------------------------------------------
# claims
# --------------------------------------------------------------------------------------------------------------


def claim_convexity_rises_first_half(wide: pd.DataFrame) -> Verdict:
    """SPEC §1: convexity rises over the first half of every model."""
    crit = "for every model, convexity at block L/2 exceeds convexity at block 1"
    nums = {}
    for m, g in wide.groupby("model", sort=False):
        g = g.set_index("layer")
        L = int(g["n_layers"].iloc[0])
        nums[m] = round(float(g.loc[L // 2, "convexity"] - g.loc[1, "convexity"]), 2)
    if not nums:
        return Verdict("Convexity rises over the first half of every model", "§1, Fig. 2a", crit, NOT_COMPUTABLE,
                       "no per-layer convexity")
    ok = all(v > 0 for v in nums.values())
    ev = f"rise from block 1 to block L/2 [pp]: {nums}"
    return Verdict("Convexity rises over the first half of every model", "§1, Fig. 2a", crit,
                   REPRODUCED if ok else NOT_REPRODUCED, ev, nums)


def claim_oooa_peaks_mid(wide: pd.DataFrame, margin: float = 1.0) -> Verdict:
    """SPEC §1: OOOA is bell-shaped with its peak in the middle layers."""
    crit = (f"for every model, the highest OOOA lies at an interior block (not the first or last) and exceeds "
            f"both the first and the last block by at least {margin} pp")
    nums, ok = {}, True
    for m, g in wide.dropna(subset=["oooa"]).groupby("model", sort=False):
        g = g.sort_values("layer")
        v = g["oooa"].to_numpy()
        k = int(np.argmax(v))
        interior = 0 < k < len(v) - 1
        good = interior and v[k] - v[0] >= margin and v[k] - v[-1] >= margin
        ok &= good
        nums[m] = f"peak {v[k]:.1f} at depth {float(g['depth'].iloc[k]):.2f}; first {v[0]:.1f}, last {v[-1]:.1f}"
    if not nums:
        return Verdict("OOOA peaks in the middle layers", "§1, Fig. 2b", crit, NOT_COMPUTABLE, "no per-layer OOOA")
    return Verdict("OOOA peaks in the middle layers", "§1, Fig. 2b", crit, REPRODUCED if ok else NOT_REPRODUCED,
                   "; ".join(f"{k}: {v}" for k, v in nums.items()), nums)


def claim_first_half_correlation(halves: dict) -> Verdict:
    """SPEC §1 / Fig. A.1: strong positive correlation between OOOA and convexity in the first half."""
    crit = "pooled first-half Pearson R > 0 with the bootstrap 95% CI above 0, in every group"
    first = {g: c for (g, h), c in halves.items() if h == "first"}
    comp = {g: c for g, c in first.items() if c.r is not None}
    if not comp:
        return Verdict("Positive correlation in the first half of the layers", "§1, Fig. A.1", crit, NOT_COMPUTABLE,
                       "; ".join(f"{g}: {c}" for g, c in first.items()) or "no groups")
    ok = all(c.r > 0 and (c.ci_low is None or c.ci_low > 0) for c in comp.values())
    return Verdict("Positive correlation in the first half of the layers", "§1, Fig. A.1", crit,
                   REPRODUCED if ok else NOT_REPRODUCED, "; ".join(f"{g}: {c}" for g, c in first.items()),
                   {g: round(c.r, 2) for g, c in comp.items()})


def claim_second_half_weaker(halves: dict) -> Verdict:
    """SPEC §1: in the second half the correlation is lower (pretrained 0.40) and negative for fine-tuned (−0.54)."""
    crit = ("second-half R below first-half R in every group, and negative for the fine-tuned group "
            "(the latter not computable without a fine-tuned group)")
    groups = sorted({g for g, _ in halves})
    nums, ok, missing = {}, True, []
    for g in groups:
        f, s = halves.get((g, "first")), halves.get((g, "second"))
        if f is None or s is None or f.r is None or s.r is None:
            missing.append(g)
            continue
        nums[g] = f"first {f.r:.2f}, second {s.r:.2f}"
        ok &= s.r < f.r
        if g == "finetuned":
            ok &= s.r < 0
    if not nums:
        return Verdict("Weaker (fine-tuned: negative) correlation in the second half", "§1, Fig. A.1", crit,
                       NOT_COMPUTABLE, f"no computable group ({missing})")
    status = REPRODUCED if ok else NOT_REPRODUCED
    ev = "; ".join(f"{k}: {v}" for k, v in nums.items())
    if "finetuned" not in nums:
        status = NOT_COMPUTABLE if ok else NOT_REPRODUCED
        ev += "; no fine-tuned group with computable R (the negative fine-tuned R cannot be checked)"
    return Verdict("Weaker (fine-tuned: negative) correlation in the second half", "§1, Fig. A.1", crit, status, ev,
                   nums)


def claim_transform_raises_oooa(rows: pd.DataFrame | None) -> Verdict:
    """SPEC §5.4: the naive transform raises last-block OOOA in every model (+13.7 on average)."""
    crit = "held-out OOOA after > before at the last block for every model (and its 95% CI above 0)"
    if rows is None or rows.empty:
        return Verdict("The transform raises OOOA", "§5.4, Table 1", crit, NOT_COMPUTABLE, "no transform results")
    last = rows[rows["position"] == "last"]
    nums = {r.model: f"{r.oooa_delta:+.1f} [{r.oooa_delta_ci_low:+.1f}, {r.oooa_delta_ci_high:+.1f}]"
            for r in last.itertuples()}
    ok = bool(len(last)) and bool((last["oooa_delta"] > 0).all() and (last["oooa_delta_ci_low"] > 0).all())
    return Verdict("The transform raises OOOA", "§5.4, Table 1", crit, REPRODUCED if ok else NOT_REPRODUCED,
                   "; ".join(f"{k}: {v}" for k, v in nums.items()), nums)


def claim_transform_raises_convexity(rows: pd.DataFrame | None) -> Verdict:
    """SPEC §5.4: the transform raises last-block convexity in most pretrained models (5 of 6, +3.1 on average)."""
    crit = "convexity Δ > 0 at the last block in more than half of the pretrained models"
    if rows is None or rows.empty:
        return Verdict("The transform raises convexity in most pretrained models", "§5.4, Table 1", crit,
                       NOT_COMPUTABLE, "no transform results")
    last = rows[(rows["position"] == "last") & (rows["group"] == "pretrained")]
    if last.empty:
        return Verdict("The transform raises convexity in most pretrained models", "§5.4, Table 1", crit,
                       NOT_COMPUTABLE, "no pretrained model in the transform results")
    up = int((last["convexity_delta"] > 0).sum())
    nums = {r.model: f"{r.convexity_delta:+.1f} [{r.convexity_delta_ci_low:+.1f}, {r.convexity_delta_ci_high:+.1f}]"
            for r in last.itertuples()}
    ok = up > len(last) / 2
    return Verdict("The transform raises convexity in most pretrained models", "§5.4, Table 1", crit,
                   REPRODUCED if ok else NOT_REPRODUCED,
                   f"{up} of {len(last)} up; " + "; ".join(f"{k}: {v}" for k, v in nums.items()), nums)


def _pairs(t2: pd.DataFrame | None) -> pd.DataFrame:
    if t2 is None or t2.empty:
        return pd.DataFrame()
    return t2[~t2["model"].isin(["avg", "std (ddof=1)", "avg ± std"])]


def claim_finetuning_raises_convexity(t2: pd.DataFrame | None) -> Verdict:
    """SPEC §5.5: fine-tuning raises last-block convexity in every model (+26.9 on average)."""
    crit = "convexity Δft > 0 at the last block for every pretrained/fine-tuned pair"
    p = _pairs(t2)
    if p.empty:
        return Verdict("Fine-tuning raises last-layer convexity", "§5.5, Table 2", crit, NOT_COMPUTABLE,
                       "no pretrained/fine-tuned pair")
    nums = {r["model"]: round(float(r["convexity Δft"]), 2) for _, r in p.iterrows()}
    ok = all(v > 0 for v in nums.values())
    return Verdict("Fine-tuning raises last-layer convexity", "§5.5, Table 2", crit,
                   REPRODUCED if ok else NOT_REPRODUCED, f"Δft [pp]: {nums}", nums)


def claim_finetuning_oooa_inconsistent(t2: pd.DataFrame | None) -> Verdict:
    """SPEC §5.5: OOOA changes inconsistently with fine-tuning (+0.58 ± 6.9)."""
    crit = "the OOOA Δft of at least two pairs differ in sign (or |mean| < sample std)"
    p = _pairs(t2)
    if len(p) < 2:
        return Verdict("OOOA changes inconsistently with fine-tuning", "§5.5, Table 2", crit, NOT_COMPUTABLE,
                       f"needs at least 2 pairs, got {len(p)}"
                       + (f" (OOOA Δft {float(p['OOOA Δft'].iloc[0]):+.2f})" if len(p) else ""))
    d = p["OOOA Δft"].to_numpy(float)
    ok = bool((d > 0).any() and (d < 0).any()) or abs(d.mean()) < d.std(ddof=1)
    nums = {r["model"]: round(float(r["OOOA Δft"]), 2) for _, r in p.iterrows()}
    return Verdict("OOOA changes inconsistently with fine-tuning", "§5.5, Table 2", crit,
                   REPRODUCED if ok else NOT_REPRODUCED, f"OOOA Δft [pp]: {nums}", nums)


def check_claims(
    wide: pd.DataFrame,
    halves: dict,
    transform_rows: pd.DataFrame | None = None,
    table2: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every checked claim as a table: claim, source, criterion, status, evidence, numbers.

    Parameters
    ----------
    wide : one row per (model, layer) with ``convexity`` and ``oooa`` (:func:`convexlib.experiments.primary_wide`)
    halves : (group, half) -> Correlation (:func:`convexlib.stats.pooled_half_correlation` per group)
    transform_rows : rows of :func:`convexlib.experiments.transform_rows` (one training source)
    table2 : :func:`convexlib.finetune.table2`
    """
    verdicts = [
        claim_convexity_rises_first_half(wide),
        claim_oooa_peaks_mid(wide),
        claim_first_half_correlation(halves),
        claim_second_half_weaker(halves),
        claim_transform_raises_oooa(transform_rows),
        claim_transform_raises_convexity(transform_rows),
        claim_finetuning_raises_convexity(table2),
        claim_finetuning_oooa_inconsistent(table2),
    ]
    return pd.DataFrame([v.as_row() for v in verdicts])


# --------------------------------------------------------------------------------------------------------------
# seeds and robustness
# --------------------------------------------------------------------------------------------------------------


def seed_summary(tidy_runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and count over seeds per (model, dataset, layer, metric).

    Parameters
    ----------
    tidy_runs : concatenated tidy tables of :func:`convexlib.experiments.layerwise` with different ``seed``.
    """
    keys = ["model", "label", "family", "variant", "group", "size", "n_layers", "layer", "depth", "dataset", "metric"]
    g = tidy_runs.groupby(keys, sort=False)["value"]
    out = g.agg(mean="mean", std=lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else np.nan, n="count")
    return out.reset_index()


def robustness(main: pd.DataFrame, variant: pd.DataFrame) -> pd.DataFrame:
    """Correlation across all layers and models between the main metrics and their App. A.3 variants.

    Parameters
    ----------
    main : tidy results with Euclidean convexity and cosine OOOA.
    variant : the same models and data with cosine-distance convexity and Euclidean OOOA.

    Returns
    -------
    DataFrame with rows "convexity: cosine vs Euclidean" and "OOOA: Euclidean vs cosine": r, CI, n, paper value.
    """
    keys = ["model", "dataset", "layer"]
    rows = []
    for metric, label, paper in (("convexity", "convexity: cosine vs Euclidean distance", 0.9931),
                                 ("oooa", "OOOA: Euclidean vs cosine similarity", 0.9989)):
        a = main[main["metric"] == metric][keys + ["value"]]
        b = variant[variant["metric"] == metric][keys + ["value"]]
        m = a.merge(b, on=keys, suffixes=("_main", "_variant"))
        c = pearson(m["value_main"], m["value_variant"], n_boot=2000, seed=0)
        rows.append({"comparison": label, "r": c.r, "ci_low": c.ci_low, "ci_high": c.ci_high, "n": c.n,
                     "paper": paper, "note": c.reason or ""})
    return pd.DataFrame(rows)


def load_if_exists(path: Path) -> pd.DataFrame | None:
    """Read a CSV if it exists (outputs of earlier notebooks), else None."""
    return pd.read_csv(path) if Path(path).exists() else None


# --------------------------------------------------------------------------------------------------------------
# our numbers beside the paper's
# --------------------------------------------------------------------------------------------------------------

PAPER_LABELS = {  # registry name -> (paper model label in tables.csv, family, variant, size)
    "vit": ("ViT base", "ViT", "pretrained", "base"), "vit_large": ("ViT large", "ViT", "pretrained", "large"),
    "beit": ("BEiT base", "BEiT", "pretrained", "base"), "beit_large": ("BEiT large", "BEiT", "pretrained", "large"),
    "data2vec": ("data2vec base", "data2vec", "pretrained", "base"),
    "data2vec_large": ("data2vec large", "data2vec", "pretrained", "large"),
    "vit_finetuned": ("ViT base", "ViT", "finetuned", "base"),
    "vit_large_finetuned": ("ViT large", "ViT", "finetuned", "large"),
    "beit_finetuned": ("BEiT base", "BEiT", "finetuned", "base"),
    "beit_large_finetuned": ("BEiT large", "BEiT", "finetuned", "large"),
    "data2vec_finetuned": ("data2vec base", "data2vec", "finetuned", "base"),
    "data2vec_large_finetuned": ("data2vec large", "data2vec", "finetuned", "large"),
}


def per_layer_vs_paper(wide: pd.DataFrame) -> pd.DataFrame:
    """Our per-layer convexity and OOOA beside the digitised Fig. 2 values, for the models that match.

    Returns an empty frame (with the columns) when no model of the run is one of the paper's 12.
    """
    ref = paper_reference("fig2_layers")
    rows = []
    for r in wide.itertuples():
        if r.model not in PAPER_LABELS:
            continue
        _, fam, var, size = PAPER_LABELS[r.model]
        for fig, metric in (("2a", "convexity"), ("2b", "oooa")):
            hit = ref[(ref["figure"] == fig) & (ref["model"] == fam) & (ref["variant"] == var)
                      & (ref["size"] == size) & (ref["layer"] == r.layer)]
            if len(hit):
                ours = float(getattr(r, metric))
                rows.append({"model": r.model, "layer": r.layer, "metric": metric, "ours": ours,
                             "paper": float(hit["value"].iloc[0]), "diff": ours - float(hit["value"].iloc[0]),
                             "paper_marker": str(hit["marker"].iloc[0]) if pd.notna(hit["marker"].iloc[0]) else ""})
    return pd.DataFrame(rows, columns=["model", "layer", "metric", "ours", "paper", "diff", "paper_marker"])


def summary_vs_paper(
    *,
    ceilings: dict[str, float] | None = None,
    baselines: dict[str, tuple[float, int]] | None = None,
    halves: dict | None = None,
    transform_tables: dict[str, pd.DataFrame] | None = None,
    table2: pd.DataFrame | None = None,
    robust: pd.DataFrame | None = None,
    models_match: bool = False,
) -> pd.DataFrame:
    """The run's headline numbers beside the paper's published values.

    Parameters
    ----------
    ceilings : triplet set -> noise ceiling (percent)
    baselines : convexity set -> (mean permuted-label baseline in percent, number of classes)
    halves : (group, half) -> Correlation
    transform_tables : from :func:`convexlib.experiments.transform_tables`
    table2 : from :func:`convexlib.finetune.table2`
    robust : from :func:`robustness`
    models_match : whether the run's models are the paper's (else the comparison is of analogous quantities)
    """
    consts = paper_reference("constants").set_index("name")["value"]

    def const(name: str) -> float:
        return float(consts[name])

    kind = "same models" if models_match else "analogous quantity, other models/data"
    rows = []

    def add(quantity: str, ours: float | None, paper: float | None, note: str = "") -> None:
        diff = None if ours is None or paper is None else ours - paper
        rows.append({"quantity": quantity, "ours": ours, "paper": paper, "difference": diff,
                     "comparison": kind, "note": note})

    for name, v in (ceilings or {}).items():
        add(f"noise ceiling of {name} [%]", v, const("oooa_noise_ceiling_pct"),
            "majority agreement of repeated judgements (paper: THINGS, 67.22 %)")
    for name, (b, n_classes) in (baselines or {}).items():
        add(f"permuted-label convexity of {name} [%]", b, 100 / 27,
            f"paper's line: 1/27 for 27 classes; this set has {n_classes} classes (1/C = {100 / n_classes:.1f} %)")
    fig = paper_reference("figA1").set_index(["group", "half"])["R"]
    for (g, h), c in (halves or {}).items():
        paper = float(fig.loc[(g, h)]) if (g, h) in fig.index else None
        add(f"pooled R, {g}, {h} half (Fig. A.1)", c.r, paper, c.reason or f"n = {c.n}")
    ref_avg = {"table1": ("table1", "pretrained, last"), "tableA2": ("tableA2", "pretrained, first"),
               "tableA3": ("tableA3", "pretrained, middle"), "tableA4": ("tableA4", "fine-tuned, last"),
               "tableA5": ("tableA5", "fine-tuned, first"), "tableA6": ("tableA6", "fine-tuned, middle")}
    tabs = paper_reference("tables")
    for name, t in (transform_tables or {}).items():
        if name not in ref_avg:
            continue
        key = name.replace("table", "").replace("A", "A.")
        sub = tabs[tabs["table"].astype(str) == key]
        for metric, col in (("oooa", "OOOA Δ"), ("convexity", "convexity Δ")):
            paper = float(sub[sub["metric"] == metric]["delta"].mean()) if len(sub) else None
            mine = t[~t["model"].isin(["avg", "std (ddof=1)"])][col]
            add(f"{name} ({ref_avg[name][1]}): mean {metric} Δ after transform [pp]",
                float(mine.mean()) if len(mine) else None, paper, f"{len(mine)} model(s); paper: 6")
    if table2 is not None and len(_pairs(table2)):
        sub = tabs[tabs["table"].astype(str) == "2"]
        p = _pairs(table2)
        for metric, col in (("convexity", "convexity Δft"), ("oooa", "OOOA Δft")):
            paper = float(sub[sub["metric"] == metric]["delta"].mean())
            add(f"Table 2: mean {metric} Δ after fine-tuning [pp]", float(p[col].mean()), paper,
                f"{len(p)} pair(s); paper: 6")
    if robust is not None:
        for r in robust.itertuples():
            add(f"R, {r.comparison} (App. A.3)", r.r, r.paper, r.note or f"n = {r.n}")
    return pd.DataFrame(rows)
