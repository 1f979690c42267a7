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
# # 6. Bring your own representations
#
# The paper's per-layer analysis for *your* model: graph convexity of your classes and, when you have human
# odd-one-out triplets over your items, OOOA and its correlation with convexity — the Fig. 2-style curves, the
# correlations (per model across layers, pooled halves of depth, per layer across models) and the tables.
#
# `sources` is a list; each entry becomes one model in the tables and figures:
#
# * **representations you computed**: `{"layers": "<folder of layer_<l>.npy, or one .npz with arrays
#   layer_<l>>", "labels": "<.npy/.csv/.tsv/.txt>", "triplets": "<.npy or ''>", "name": "...", "dataset": "..."}`
#   — one `(n_items, d)` array per layer l = 1..L (the output of block l, no gaps), rows in item order; one label
#   per item (a `label` column or one per line; an empty label leaves the item out of convexity); triplets an int
#   `(N, 3)` array of 0-based rows with the odd one out in column 2;
# * **a registry model run on your items**: `{"model": "<registry name>", "images": "<folder with one sub-folder
#   per class>", "max_per_class": 50}` or `{"model": "minilm", "texts": "<one text per line>", "labels": "..."}`.
#
# With `sources = []` the notebook runs a **worked example** on offline data that goes through exactly these
# file formats: it exports MiniLM's layers on the THINGS concepts, the superclass labels and the 20,000 human
# triplets to `<cache>/byo_example/` and reads them back, together with MiniLM on the concept names (a registry
# source) and a 16-d random projection (an `.npz`). The `tiny` profile exports a tiny random ViT on 120 CIFAR-10
# images (no triplets, so no OOOA). Outputs are `figures/<profile>/byo_*`.

# %% tags=["parameters"]
profile = "offline"
sources = []
data_root = ""
cache_dir = ""
device = "auto"
seed = 42
n_neighbors = 10
max_paths = None
min_class_size = 10
n_boot = 2000

# %%
import pandas as pd

from convexlib import byo as B
from convexlib import experiments as E
from convexlib import profiles, stats
from convexlib.outputs import OutputWriter
from convexlib.plotting import fig2_panels, fig2c, fig_a1, model_colours

cfg = profiles.from_namespace(globals())  # validates every parameter, fills profile defaults
profiles.check_notebook_values({"n_boot": n_boot})
srcs = B.validate_sources(sources)
if not srcs:
    print(f"sources is empty: running the worked example of the {cfg.profile!r} profile")
    srcs = B.validate_sources(B.write_worked_example(
        cfg.profile, data_root=cfg.data_root, cache_dir=cfg.cache_dir, device=cfg.device,
        batch_size=cfg.batch_size, seed=cfg.seed))
params = {"profile": cfg.profile, "sources": srcs, "example": not sources, "data_root": cfg.data_root,
          "cache_dir": cfg.cache_dir, "device": cfg.device, "seed": cfg.seed, "n_neighbors": cfg.n_neighbors,
          "max_paths": cfg.max_paths, "min_class_size": cfg.min_class_size, "n_boot": n_boot}
out = OutputWriter(cfg.profile, "06_your_model", params, data_files=B.source_files(srcs))
srcs

# %% [markdown]
# ## The sources
# Items, layers, the classes that enter convexity (items without a label and classes below `min_class_size`
# are left out and listed) and the triplets.

# %%
loaded = [B.load_source(s, index=i, seed=cfg.seed, batch_size=cfg.batch_size, device=cfg.device,
                        cache_dir=cfg.cache_dir or None) for i, s in enumerate(srcs)]
for src in loaded:
    print(B.describe_source(src, cfg.min_class_size))

# %% [markdown]
# ## Convexity and OOOA per layer
# Same computation as notebook 1 (k-NN graph with k = `n_neighbors`, up to `max_paths` paths per class, the
# permuted-label baseline; OOOA with centred cosine similarity, ties wrong). Results are cached on the features.

# %%
tidy = pd.concat([B.source_layerwise(src, min_class_size=cfg.min_class_size, n_neighbors=cfg.n_neighbors,
                                     max_paths=cfg.max_paths, seed=cfg.seed, cache_dir=cfg.cache_dir or None,
                                     progress=True) for src in loaded], ignore_index=True)
out.table(tidy, "byo_layerwise", floatfmt=".2f", title="Your representations: per-layer convexity and OOOA (tidy)")
wide = B.paired_wide(tidy) if (tidy["metric"] == "oooa").any() else None
E.primary_wide(tidy).round(2)

# %% [markdown]
# ## Fig. 2a/2b-style curves
# The dashed noise ceiling is drawn for triplet sets in which most triplets were judged at least twice.

# %%
ceilings = {}
for src in loaded:
    if src.triplets is not None:
        c = B.triplet_noise_ceiling(src.triplets)
        if c is not None:
            ceilings[src.triplet_set] = c
    else:
        print(f"{src.name}: no triplets given, OOOA skipped")
print("noise ceilings (%):", {k: round(v, 2) for k, v in ceilings.items()})
fig = fig2_panels(tidy, ceilings=ceilings)
out.figure(fig, "byo_fig2")
fig

# %% [markdown]
# ## Correlation between OOOA and convexity
# Pearson R with a bootstrap 95 % interval: per model across its layers, pooled over the first / second half of
# the layers of all models, and per layer across models (needs at least three models, matched as base *l* ↔
# large *2l*). What cannot be computed is listed with the reason, never as a number. With only three models the
# per-layer R rests on three points and its bootstrap interval is not informative; read it as a description.

# %%
corr = B.byo_correlation(tidy, n_boot=n_boot, seed=cfg.seed)
out.table(corr, "byo_correlation", title="Your representations: Pearson R between OOOA and convexity")
if wide is not None and len(wide):
    halves = {("all", h): c for h, c in stats.pooled_half_correlation(wide, n_boot=n_boot, seed=cfg.seed).items()}
    fig = fig_a1(wide.assign(group="all"), halves, model_colours(tidy))
    out.figure(fig, "byo_scatter")
    per_layer = corr[corr["kind"] == "per layer"]
    if per_layer["computable"].any():
        fig = fig2c({"all models": per_layer.dropna(subset=["depth"])})
        fig.axes[0].legend(fontsize=7, loc="lower right", frameon=False)
        out.figure(fig, "byo_fig2c")
else:
    print("no source has triplets: the correlations are not computable (see the table)")
corr
