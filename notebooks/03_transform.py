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
# # 3. The naive alignment transform and convexity (paper §3.2, Tables 1 and A.2–A.6)
#
# An affine map *x ↦ xW + b* is fitted on a layer's representations of the triplet items so that dot products of
# the transformed vectors predict the human odd-one-out choices (Muttenthaler et al. 2023; cross-entropy over the
# three pair similarities + λ‖W‖_F, Adam, early stopping). It is cross-validated over **objects** (3 folds: a
# triplet trains when all its items are training objects and is held out when all are held-out objects), λ is
# chosen by validation loss, and OOOA is reported before and after on the **same held-out human judgements**.
# The transform is then applied to the model's convexity set at the same layer and graph convexity is measured
# again with the same sampled pairs (paired bootstrap 95 % CI of Δ).
#
# λ is chosen per layer from `lambdas` by the mean validation cross-entropy over folds. The default grid
# (0.01, 0.1, 1) is one decade above the reference default 1e-3: on the offline data a grid of (1e-3, 1e-2, 1e-1)
# chose its upper edge, 0.1, in all nine fits; `lambdas` takes any grid (the reference's nine values are
# `convexlib.transform.REFERENCE_LAMBDAS`).
#
# Layers: first (block 1), middle (block L // 2) and last (block L). Offline, the text model is trained on the
# 20,000 real THINGS judgements (about 300 training triplets per fold: the held-out OOOA carries several points of
# noise) and, as a second source, on triplets simulated from the VICE human embedding; the image model on a
# seeded subset of the triplets derived from the Kriegeskorte-92 similarity judgements.

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
max_triplets = None
n_simulated = None
train_sources = ["human", "vice"]
lambdas = [0.01, 0.1, 1.0]

# %%
import pandas as pd

from convexlib import experiments as E
from convexlib import profiles
from convexlib.models import get_spec
from convexlib.outputs import OutputWriter
from convexlib.plotting import transform_deltas

cfg = profiles.from_namespace(globals())  # validates every parameter, fills profile defaults
profiles.check_notebook_values({"train_sources": train_sources, "lambdas": lambdas})
out = OutputWriter(cfg.profile, "03_transform", {**cfg.as_dict(), "train_sources": train_sources,
                                                 "lambdas": lambdas})
out.data_checksums.update(E.data_provenance(cfg))

# %% [markdown]
# ## Fit, cross-validate and measure
# Fitted transforms and convexity results are cached: a rerun does not refit.

# %%
rows = []
for name in cfg.models:
    spec = get_spec(name)
    for source in train_sources:
        if source == "vice" and spec.modality != "text" and cfg.profile != "paper":
            continue  # VICE simulates THINGS-concept triplets only
        rows += E.transform_rows(cfg, name, train_source=source, lambdas=lambdas)
allrows = pd.DataFrame(rows)
out.table(allrows.drop(columns=[c for c in ("before", "after") if c in allrows]), "transform_all",
          title="Naive transform: every model, layer and training source")
allrows[["model", "position", "layer", "train_source", "oooa_orig", "oooa_heldout_before", "oooa_transf",
         "oooa_delta", "convexity_orig", "convexity_delta", "convexity_delta_ci_low", "convexity_delta_ci_high",
         "lambda"]].round(2)

# %% [markdown]
# ## The paper's tables
# One table per group and layer position (Table 1 = pretrained, last block; A.2 first; A.3 middle; A.4–A.6 the
# fine-tuned models), for the first training source. "OOOA Δ" is held-out after minus held-out before on the
# same judgements; "convexity Δ" is transformed minus original, with its paired bootstrap 95 % CI.
#
# The CIs cover the sampling of judgements and paths, not the fit itself. The fits are seeded and repeat exactly,
# but their numbers change in the last bits with the number of torch threads, and early stopping can turn that
# into a different model: between 2-thread fits one after the other and 1-thread fits two at a time (the
# default on CPU), DINOv2's block-1 convexity Δ moved from +1.8 to −2.1 pp and its OOOA Δ from −7.2 to −5.4 pp,
# while six of the nine rows kept every digit. Read a Δ of a few points at one layer with that in mind.

# %%
primary = allrows[allrows["train_source"] == train_sources[0]]
tables = E.transform_tables(primary)
for tname, t in tables.items():
    out.table(t, tname, title=f"{tname}: naive transform ({train_sources[0]} triplets)")
    print(tname)
    display(t.round(2))

# %% [markdown]
# ## Δ at a glance

# %%
fig = transform_deltas(allrows)
out.figure(fig, "transform_deltas")
fig
