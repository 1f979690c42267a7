# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 2. Correlation between convexity and alignment (paper §3, Fig. 2c, Fig. A.1, Table A.7)
#
# Reads the per-layer results of notebook 1 (`figures/<profile>/layerwise.csv`) and correlates graph convexity
# with OOOA (Pearson R, with a bootstrap 95 % interval) in three ways:
#
# * **per layer across models** (Fig. 2c): for each block *l* of the shallowest model, the models of a group
#   (pretrained / fine-tuned) each contribute their matched layer (base *l* ↔ large *2l*; `pairing="2l-1"` is the
#   alternative). With fewer than three models in a group R is *not computable* and is reported as such.
#   The paper's panel has 11 points for 12 layers (SPEC §7, item 1): we plot all positions and overlay the
#   paper's digitised 11 points at their published positions;
# * **pooled halves** (Fig. A.1): all (model, layer) points of the first / second half of depth;
# * **per model across layers** (Table A.7).
#
# Each model's *primary* convexity set is used (THINGS superclasses; in the offline profile the ImageNet photos of
# THINGS concepts for the image model).

# %% tags=["parameters"]
profile = "offline"
pairing = "2l"
n_boot = 2000
seed = 42

# %%
import pandas as pd

from convexlib import experiments as E
from convexlib import profiles, stats
from convexlib.outputs import OutputWriter
from convexlib.paths import figures_dir, repo_root
from convexlib.plotting import fig2c, fig_a1, model_colours

profiles.check_notebook_values({"pairing": pairing, "n_boot": n_boot})
src = figures_dir(profile) / "layerwise.csv"
if not src.exists():
    raise FileNotFoundError(f"{src} is missing: run notebook 01_layerwise with profile={profile!r} first")
tidy = pd.read_csv(src)
wide = E.primary_wide(tidy)
out = OutputWriter(profile, "02_correlation", {"profile": profile, "pairing": pairing, "n_boot": n_boot,
                                               "seed": seed}, data_files=[src])
wide.round(2)

# %% [markdown]
# ## Fig. 2c — per-layer correlation across the models of each group

# %%
per_layer = {g: stats.per_layer_correlation(w, pairing=pairing, n_boot=n_boot, seed=seed)
             for g, w in wide.groupby("group")}
table = pd.concat([df.assign(group=g) for g, df in per_layer.items()], ignore_index=True)
out.table(table[["group", "position", "depth", "r", "ci_low", "ci_high", "n_models", "computable", "reason"]],
          "fig2c_per_layer_correlation", title="Fig. 2c: per-layer Pearson R across models")
reference = pd.read_csv(repo_root() / "reference" / "fig2c.csv")  # the paper's 11 digitised points, for context
fig = fig2c(per_layer, reference)
out.figure(fig, "fig2c_per_layer_correlation")
table

# %% [markdown]
# ## Fig. A.1 — pooled first / second half of the layers

# %%
halves = {}
rows = []
for g, w in wide.groupby("group"):
    for half, c in stats.pooled_half_correlation(w, n_boot=n_boot, seed=seed).items():
        halves[(g, half)] = c
        rows.append({"group": g, "half": half, "r": c.r, "ci_low": c.ci_low, "ci_high": c.ci_high, "n": c.n,
                     "computable": c.computable, "reason": c.reason or ""})
pooled = pd.DataFrame(rows)
out.table(pooled, "figA1_pooled_correlation", title="Fig. A.1: pooled Pearson R per group and half")
fig = fig_a1(wide, halves, model_colours(tidy))
out.figure(fig, "figA1_scatter")
pooled

# %% [markdown]
# ## Table A.7 — per-model correlation across layers

# %%
rows = []
for model, c in stats.per_model_correlation(wide, n_boot=n_boot, seed=seed).items():
    meta = wide[wide["model"] == model].iloc[0]
    rows.append({"model": model, "label": meta["label"], "group": meta["group"], "n_layers": int(meta["n_layers"]),
                 "r": c.r, "ci_low": c.ci_low, "ci_high": c.ci_high, "computable": c.computable,
                 "reason": c.reason or ""})
a7 = pd.DataFrame(rows)
out.table(a7, "tableA7_per_model_correlation", title="Table A.7: Pearson R between OOOA and convexity across layers")
a7
