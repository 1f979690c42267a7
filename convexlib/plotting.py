"""Figures in the paper's style (SPEC §5.2): tab20 colours, circle markers, a normalised-depth x axis with
First / Mid / Last ticks, dashed chance and ceiling lines.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DEPTH_TICKS = ([0.0, 0.5, 1.0], ["First", "Mid", "Last"])

# The paper's colour order (SPEC §5.2): per family four tab20 entries: base, base ft, large, large ft.
PAPER_COLOURS = {
    ("ViT", "pretrained", "base"): 0,
    ("ViT", "finetuned", "base"): 1,
    ("ViT", "pretrained", "large"): 2,
    ("ViT", "finetuned", "large"): 3,
    ("BEiT", "pretrained", "base"): 4,
    ("BEiT", "finetuned", "base"): 5,
    ("BEiT", "pretrained", "large"): 6,
    ("BEiT", "finetuned", "large"): 7,
    ("data2vec", "pretrained", "base"): 8,
    ("data2vec", "finetuned", "base"): 9,
    ("data2vec", "pretrained", "large"): 10,
    ("data2vec", "finetuned", "large"): 11,
}


def colour_map(keys: Sequence) -> dict:
    """tab20 colours for ``keys`` in order (paper models get the paper's colour; others follow in order)."""
    cmap = plt.get_cmap("tab20")
    out, used = {}, set()
    for k in keys:
        if isinstance(k, tuple) and k in PAPER_COLOURS:
            out[k] = cmap(PAPER_COLOURS[k])
            used.add(PAPER_COLOURS[k])
    free = [i for i in list(range(0, 20, 2)) + list(range(1, 20, 2)) if i not in used]
    for k in keys:
        if k not in out:
            out[k] = cmap(free.pop(0) if free else len(out) % 20)
    return out


def depth_axis(ax, label: str = "Layers") -> None:
    """Normalised depth axis with First / Mid / Last ticks rotated by 45°."""
    ax.set_xlim(-0.04, 1.04)
    ax.set_xticks(*DEPTH_TICKS)
    plt.setp(ax.get_xticklabels(), rotation=45)
    ax.set_xlabel(label)


def layer_curves(
    ax,
    wide: pd.DataFrame,
    metric: str,
    *,
    group: str = "model",
    colours: dict | None = None,
    err: str | None = None,
    hlines: Sequence[tuple[float, str]] = (),
    ylabel: str = "",
    title: str = "",
    ylim: tuple[float, float] | None = None,
    linestyle_by: str | None = None,
) -> None:
    """One line per ``group`` value of ``metric`` against normalised depth.

    Parameters
    ----------
    ax : matplotlib Axes
    wide : DataFrame with columns ``group``, ``depth`` and ``metric`` (and ``err`` for error bars).
    hlines : (y, label) pairs drawn dashed with the label at the right (chance, ceiling, baseline), or
        (y, label, "left") drawn dotted with the label at the left.
    linestyle_by : a column whose value "finetuned" draws a dashed line (pretrained solid).
    """
    keys = list(dict.fromkeys(wide[group].tolist()))
    colours = colours or colour_map(keys)
    for k in keys:
        g = wide[wide[group] == k].sort_values("depth")
        g = g[np.isfinite(g[metric].to_numpy(float))]
        if g.empty:
            continue
        ls = "-"
        if linestyle_by and (g[linestyle_by] == "finetuned").any():
            ls = "--"
        kw = dict(color=colours[k], marker="o", markersize=4, linewidth=1.5, linestyle=ls, label=str(k))
        if err and err in g and g[err].notna().any():
            ax.errorbar(g["depth"], g[metric], yerr=g[err], capsize=2, **kw)
        else:
            ax.plot(g["depth"], g[metric], **kw)
    for y, lab, *where in hlines:
        left = bool(where) and where[0] == "left"
        ax.axhline(y, color="grey", linestyle=":" if left else "--", linewidth=1)
        ax.annotate(lab, (0.0 if left else 1.0, y), xytext=(2 if left else -2, 2), textcoords="offset points",
                    ha="left" if left else "right", va="bottom", fontsize=7, color="grey")
    depth_axis(ax)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)


def model_colours(tidy: pd.DataFrame) -> dict:
    """Colour per model name: the paper's tab20 colour for paper models, the next free ones otherwise."""
    fam = {"vit": "ViT", "beit": "BEiT", "data2vec": "data2vec"}
    models = list(dict.fromkeys(tidy["model"].tolist()))
    meta = tidy.drop_duplicates("model").set_index("model")
    keys = []
    for m in models:
        r = meta.loc[m]
        k = (fam.get(str(r["family"]), str(r["family"])), str(r["variant"]), str(r["size"]))
        keys.append(k if k in PAPER_COLOURS else m)
    cmap = colour_map(keys)
    return {m: cmap[k] for m, k in zip(models, keys)}


def fig2_panels(
    tidy: pd.DataFrame,
    *,
    ceilings: dict[str, float] | None = None,
    chance_oooa: float = 100 / 3,
    n_classes: dict[str, int] | None = None,
) -> "plt.Figure":
    """Fig. 2a/2b-style panels: convexity per convexity set, OOOA per triplet set, one line per model.

    Parameters
    ----------
    tidy : DataFrame from :func:`convexlib.experiments.layerwise`.
    ceilings : triplet-set name -> noise ceiling in percent (dashed line).
    chance_oooa : chance level of OOOA in percent.
    n_classes : convexity-set name -> number of classes C; draws the 1/C line (the paper's 1/27) beside the
        label-permutation baseline.
    """
    colours = model_colours(tidy)
    labels = tidy.drop_duplicates("model").set_index("model")["label"].to_dict()
    conv_sets = list(dict.fromkeys(tidy.loc[tidy["metric"] == "convexity", "dataset"]))
    oooa_sets = list(dict.fromkeys(tidy.loc[tidy["metric"] == "oooa", "dataset"]))
    ncol = max(len(conv_sets), len(oooa_sets), 1)
    nrow = int(bool(conv_sets)) + int(bool(oooa_sets)) or 1
    fig, grid = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.8 * nrow), squeeze=False)
    rows = [conv_sets, oooa_sets] if conv_sets and oooa_sets else [conv_sets or oooa_sets]
    for r, sets in enumerate(rows):
        for ax in grid[r, len(sets):]:
            ax.axis("off")
    axes = [ax for r, sets in enumerate(rows) for ax in grid[r, : len(sets)]]
    for ax, ds in zip(axes, conv_sets):
        sub = tidy[tidy["dataset"] == ds].pivot_table(
            index=["model", "depth", "group"], columns="metric", values="value").reset_index()
        base = sub["convexity_baseline"].mean() if "convexity_baseline" in sub else np.nan
        hl = [(float(base), f"permuted labels ({base:.1f}%)")] if np.isfinite(base) else []
        if n_classes and n_classes.get(ds):
            c = int(n_classes[ds])
            hl.append((100.0 / c, f"1/C = 1/{c} ({100 / c:.1f}%)", "left"))
        layer_curves(ax, sub, "convexity", colours=colours, err="convexity_sem", hlines=hl,
                     ylabel="Convexity [%]", title=f"Graph convexity: {ds}", ylim=(0, 100), linestyle_by="group")
    for ax, ds in zip(axes[len(conv_sets):], oooa_sets):
        sub = tidy[(tidy["dataset"] == ds) & (tidy["metric"] == "oooa")].rename(columns={"value": "oooa"})
        hl = [(chance_oooa, "chance")]
        if ceilings and ds in ceilings:
            hl.append((ceilings[ds], f"noise ceiling ({ceilings[ds]:.1f}%)"))
        top = max(70.0, (ceilings or {}).get(ds, 0) + 5, float(sub["oooa"].max()) + 5)
        layer_curves(ax, sub, "oooa", colours=colours, hlines=hl, ylabel="OOOA [%]",
                     title=f"Similarity to humans: {ds}", ylim=(25, top), linestyle_by="group")
    handles, labs = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        h, l = ax.get_legend_handles_labels()
        for hh, ll in zip(h, l):
            if ll not in labs:
                handles.append(hh)
                labs.append(ll)
    fig.legend(handles, [labels.get(x, x) for x in labs], loc="lower center", ncol=min(len(labs), 4),
               bbox_to_anchor=(0.5, -0.04), frameon=False)
    fig.tight_layout()
    return fig


def fig2c(per_layer: dict[str, pd.DataFrame], reference: pd.DataFrame | None = None) -> "plt.Figure":
    """Fig. 2c: per-layer R across the models of each group, against depth.

    Parameters
    ----------
    per_layer : group -> DataFrame from :func:`convexlib.stats.per_layer_correlation`.
    reference : optional digitised paper values (columns ``index, group, correlation``; 11 points), drawn
        faint at their published depth positions (index / 10) for comparison.
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    shades = {"pretrained": "black", "finetuned": "grey"}
    notes = []
    for group, df in per_layer.items():
        c = shades.get(group, None)
        ok = df[df["computable"]]
        if len(ok):
            ax.plot(ok["depth"], ok["r"], marker="o", color=c, label=f"{group} (ours)")
            if ok["ci_low"].notna().any():
                ax.fill_between(ok["depth"], ok["ci_low"], ok["ci_high"], color=c, alpha=0.12, linewidth=0)
        if (~df["computable"]).any():
            notes.append(f"{group}: not computable ({df.loc[~df['computable'], 'reason'].iloc[0]})")
    if reference is not None and len(reference):
        for group, g in reference.groupby("group"):
            ax.plot(g["index"] / 10, g["correlation"], linestyle=":", marker="x", color=shades.get(group),
                    alpha=0.6, label=f"{group} (paper, 11 points)")
    ax.axhline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("Correlation (Pearson R)")
    ax.set_title("Correlation between OOOA and convexity")
    depth_axis(ax)
    ax.grid(alpha=0.3)
    if notes:
        ax.text(0.5, 0.5, "\n".join(notes), transform=ax.transAxes, fontsize=9, ha="center", va="center",
                color="firebrick", bbox={"facecolor": "white", "edgecolor": "firebrick", "alpha": 0.9})
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    fig.tight_layout()
    return fig


def fig_a1(wide: pd.DataFrame, halves: dict[tuple[str, str], "object"], colours: dict) -> "plt.Figure":
    """Fig. A.1: OOOA vs convexity scatter, rows first/second half, columns groups; R in each panel.

    Parameters
    ----------
    wide : one row per (model, layer) with ``group``, ``oooa``, ``convexity``, ``layer``, ``n_layers``.
    halves : (group, half) -> Correlation
    colours : model -> colour
    """
    groups = [g for g in ("pretrained", "finetuned") if g in set(wide["group"])] or sorted(set(wide["group"]))
    fig, axes = plt.subplots(2, len(groups), figsize=(4.3 * len(groups), 7.0), squeeze=False, sharex=True,
                             sharey=True)
    labels = wide.drop_duplicates("model").set_index("model")["label"].to_dict()
    for j, g in enumerate(groups):
        sub = wide[wide["group"] == g]
        first = sub["layer"] <= sub["n_layers"] // 2
        for i, (half, mask, marker) in enumerate((("first", first, "o"), ("second", ~first, "v"))):
            ax = axes[i, j]
            for m, d in sub[mask].groupby("model", sort=False):
                ax.scatter(d["oooa"], d["convexity"], color=colours.get(m), marker=marker, s=22,
                           label=labels.get(m, m), edgecolors="none")
            c = halves[(g, half)]
            txt = f"R={c.r:.2f}" if c.r is not None else f"R not computable\n({c.reason})"
            ax.text(0.97, 0.04, txt, transform=ax.transAxes, ha="right", va="bottom", fontsize=9)
            ax.set_title(f"{g.capitalize()} models — {half} half of layers", fontsize=9)
            ax.grid(alpha=0.3)
            if i == 1:
                ax.set_xlabel("OOOA [%]")
            if j == 0:
                ax.set_ylabel("Convexity [%]")
    h, l = axes[0, 0].get_legend_handles_labels()
    fig.legend(h, l, loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.04), frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def overlay_paper(wide: pd.DataFrame, reference: pd.DataFrame, colours: dict) -> "plt.Figure":
    """Our convexity and OOOA curves (bold) over the paper's digitised Fig. 2a/2b curves (faint, grey unless the
    model matches), against normalised depth.

    Parameters
    ----------
    wide : one row per (model, layer) with ``depth``, ``convexity``, ``oooa``, ``label``, ``paper_key`` (the
        (family, variant, size) of a matching paper model, or None).
    reference : ``reference/fig2_layers.csv``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ref = reference.copy()
    ref["n_layers"] = ref["size"].map({"base": 12, "large": 24})
    ref["depth"] = (ref["layer"] - 1) / (ref["n_layers"] - 1)
    matched = set(wide["paper_key"].dropna()) if "paper_key" in wide else set()
    for ax, (fig_id, metric, ylab) in zip(axes, (("2a", "convexity", "Convexity [%]"), ("2b", "oooa", "OOOA [%]"))):
        for key, g in ref[ref["figure"] == fig_id].groupby(["model", "variant", "size"]):
            c = plt.get_cmap("tab20")(PAPER_COLOURS.get(key, 0)) if key in matched else "lightgrey"
            ax.plot(g["depth"], g["value"], color=c, linewidth=1, alpha=0.8 if key in matched else 0.9,
                    linestyle=":" if key[1] == "finetuned" else "-")
        for m, g in wide.groupby("model", sort=False):
            g = g.sort_values("depth").dropna(subset=[metric])
            if len(g):
                ax.plot(g["depth"], g[metric], color=colours.get(m), marker="o", markersize=4, linewidth=2.2,
                        label=str(g["label"].iloc[0]))
        depth_axis(ax)
        ax.set_ylabel(ylab)
        ax.grid(alpha=0.3)
    axes[0].set_title("Convexity: ours (bold) over the paper's Fig. 2a (grey)", fontsize=9)
    axes[1].set_title("OOOA: ours (bold) over the paper's Fig. 2b (grey)", fontsize=9)
    axes[0].set_ylim(0, 100)
    axes[1].set_ylim(30, 70)
    axes[1].legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def transform_deltas(rows: pd.DataFrame) -> "plt.Figure":
    """Horizontal bars of the transform's OOOA Δ and convexity Δ per model, layer position and training source,
    with their paired bootstrap 95 % CIs (blue: up, red: down).

    Parameters
    ----------
    rows : rows of :func:`convexlib.experiments.transform_rows` (columns model, position, train_source,
        oooa_delta(_ci_low/_ci_high), convexity_delta(_ci_low/_ci_high)).
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * len(rows) + 1.6))
    labels = [f"{r.model}\n{r.position} ({r.train_source})" for r in rows.itertuples()]
    for ax, (col, title) in zip(axes, (("oooa_delta", "OOOA Δ (held-out, after − before) [pp]"),
                                       ("convexity_delta", "Convexity Δ (transformed − original) [pp]"))):
        y = rows[col].to_numpy(float)
        err = None
        if f"{col}_ci_low" in rows:
            err = np.vstack([y - rows[f"{col}_ci_low"].to_numpy(float), rows[f"{col}_ci_high"].to_numpy(float) - y])
        ax.barh(range(len(y)), y, xerr=err, color=["tab:blue" if v >= 0 else "tab:red" for v in y], alpha=0.8,
                error_kw={"capsize": 2, "linewidth": 1})
        ax.set_yticks(range(len(y)), labels, fontsize=7)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
