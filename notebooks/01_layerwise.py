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
# # 1. Layer-wise graph convexity and human alignment (paper §3, Fig. 2a/2b)
#
# For every model of the profile and every transformer block *l* (1..L, the output of block *l*, before any final
# norm; ViT-style models pooled by their CLS token, BEiT/data2vec by the mean of the patch tokens), this notebook
# measures
#
# * **graph convexity** of concept regions: a kNN graph (k = `n_neighbors`) over all items of one layer, up to
#   `max_paths` shortest paths per class between same-class items, and the share of each path's interior that
#   stays in the class; the layer's score is the mean over classes. The dashed line is the same score with the
#   labels randomly permuted (the chance level the paper draws at 1/27);
# * **odd-one-out accuracy (OOOA)**: the share of human triplet judgements whose odd one out is also the least
#   similar item in the layer (centred cosine similarity; ties count as wrong). Chance is 1/3; the noise ceiling is
#   the agreement among humans.
#
# The `offline` profile uses real human data and the two real transformers that install offline: MiniLM-L6 on the
# THINGS concepts as text, and a DINOv2 ViT-S/14 on real photos (ImageNet photos of THINGS concepts grouped into
# superclasses, CIFAR-10; OOOA on triplets derived from the Kriegeskorte-92 similarity judgements — an extension
# beyond the paper). The `paper` profile runs the paper's 12 checkpoints on THINGS.

# %% tags=["parameters"]
profile = "offline"
data_root = ""
cache_dir = ""
device = "auto"
seed = 42
n_neighbors = 10
max_paths = None
images_per_class = None
min_class_size = 10
models = None
batch_size = None
sweep_results = ""

# %%
from convexlib import data as D
from convexlib import experiments as E
from convexlib import profiles
from convexlib.outputs import OutputWriter
from convexlib.plotting import fig2_panels

cfg = profiles.from_namespace(globals())  # validates every parameter, fills profile defaults
out = OutputWriter(cfg.profile, "01_layerwise", cfg.as_dict())
out.data_checksums.update(E.data_provenance(cfg))
cfg

# %% [markdown]
# ## The evaluation sets
# Which items each model is measured on, with the number of items per class (classes below `min_class_size` are
# dropped and listed).

# %%
from convexlib.models import get_spec

for name in cfg.models:
    conv_sets, oooa_set = E.evaluation_sets(cfg, get_spec(name))
    for s in conv_sets:
        print(f"{name:>22} convexity set {s.name}: {len(s.rows)} items in {len(s.class_sizes())} classes "
              f"{s.class_sizes()}; dropped (< {cfg.min_class_size}): {s.dropped or 'none'}")
    if oooa_set is not None:
        print(f"{name:>22} OOOA set {oooa_set.name}: {len(oooa_set.items)} items, {len(oooa_set.triplets)} judgements")

# %% [markdown]
# ## Convexity and OOOA per layer
# Features are extracted once per model and data set and cached; convexity results are cached too, so a rerun
# only plots. With `sweep_results` set, the per-layer results of a (possibly distributed) sweep are read instead
# (`python -m convexlib.sweep`, see `convexlib/sweep.py`); pass the sweep's `models` too.

# %%
if sweep_results:  # a finished `python -m convexlib.sweep` run (folder or its results.csv)
    from convexlib import sweep as S

    tidy = S.results_for_notebook(sweep_results, seed=cfg.seed, profile=cfg.profile)
else:
    tidy = E.layerwise(cfg)
out.table(tidy, "layerwise", floatfmt=".2f", title="Per-layer convexity and OOOA (tidy)")
E.primary_wide(tidy).round(2)

# %% [markdown]
# ## Fig. 2a/2b
# Noise ceilings come from the repeated judgements themselves (majority agreement, tied majorities counted
# fractionally); the paper's 67.22 % for THINGS is the same quantity on the full THINGS data.

# %%
ceilings = E.noise_ceilings(cfg)
print({k: round(v, 2) for k, v in ceilings.items()})
fig = fig2_panels(tidy, ceilings=ceilings, n_classes=E.class_counts(cfg))
out.figure(fig, "fig2ab_layerwise")
fig
