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
# # 5. Reproduction report: our numbers beside the paper's, claims checked, uncertainty, robustness
#
# This notebook reads the outputs of notebooks 1–4 for the profile and
#
# 1. sets the run's numbers beside the paper's published values (`reference/*.csv`): per layer where the models
#    match (paper profile), otherwise the analogous headline quantities, with the differences;
# 2. checks each qualitative claim of the paper as an executable test with a stated criterion, and marks it
#    *reproduced*, *not reproduced* or *not computable* for this profile, with the numbers behind the verdict;
# 3. repeats the seeded parts (image draws where the profile draws images, path sampling, the label permutation)
#    over `n_seeds` seeds and shows the spread;
# 4. recomputes convexity with cosine distance and OOOA with Euclidean distance and correlates them with the main
#    versions across all layers and models (paper App. A.3: R = 0.9931 and 0.9989).

# %% tags=["parameters"]
profile = "offline"
data_root = ""
cache_dir = ""
device = "auto"
seed = 42
n_seeds = None
n_neighbors = 10
max_paths = None
images_per_class = None
min_class_size = 10
models = None
batch_size = None
n_boot = 2000

# %%
import pandas as pd

from convexlib import experiments as E
from convexlib import profiles, report, stats
from convexlib.finetune import table2 as make_table2
from convexlib.outputs import OutputWriter
from convexlib.paths import figures_dir
from convexlib.plotting import fig2_panels, model_colours, overlay_paper

cfg = profiles.from_namespace(globals())  # validates every parameter, fills profile defaults
here = figures_dir(cfg.profile)
main = report.load_if_exists(here / "layerwise.csv")
if main is None:
    raise FileNotFoundError(f"{here / 'layerwise.csv'} is missing: run notebook 01_layerwise first")
transform_all = report.load_if_exists(here / "transform_all.csv")
t2 = report.load_if_exists(here / "table2.csv")
ft = report.load_if_exists(here / "finetune_layerwise.csv")
profiles.check_notebook_values({"n_boot": n_boot})
out = OutputWriter(cfg.profile, "05_report", {**cfg.as_dict(), "n_boot": n_boot})
out.data_checksums.update(E.data_provenance(cfg))
print("inputs:", {k: v is not None for k, v in
                  {"layerwise": main, "transform": transform_all, "table2": t2, "finetune": ft}.items()})

# %% [markdown]
# ## Correlations on everything the run has
# The fine-tuned group, where the profile has one, comes from notebook 4 (offline: the project's own fine-tuned
# MiniLM, its convexity measured on the held-out half of the concepts).

# %%
wide = E.primary_wide(main)
if ft is not None:
    wide_ft = E.primary_wide(ft)
    wide = pd.concat([wide, wide_ft[wide_ft["group"] == "finetuned"]], ignore_index=True)
halves = {}
for g, w in wide.groupby("group"):
    for h, c in stats.pooled_half_correlation(w, n_boot=n_boot, seed=cfg.seed).items():
        halves[(g, h)] = c
{k: str(v) for k, v in halves.items()}

# %% [markdown]
# ## Uncertainty over seeds
# Each seed redraws the images where the profile draws them (CIFAR-10 offline, THINGS superclass images in the
# paper profile), the sampled paths and the label permutation. Error bars: sample std over seeds.

# %%
seeds = [cfg.seed + i for i in range(cfg.n_seeds)]
runs = pd.concat([main] + [E.layerwise(cfg, seed=s) for s in seeds[1:]], ignore_index=True)
spread = report.seed_summary(runs)
out.table(spread, "report_seeds", title=f"Mean and sample std over seeds {seeds}")
shown = spread.rename(columns={"mean": "value"}).copy()
sem = shown[shown["metric"] == "convexity"].assign(metric="convexity_sem", value=lambda d: d["std"])
plot_df = pd.concat([shown[shown["metric"].isin(["convexity", "oooa", "convexity_baseline"])], sem])
plot_df["seed"] = -1
n_classes = E.class_counts(cfg)  # classes per convexity set, for the 1/C line and the baselines table
fig = fig2_panels(plot_df, ceilings=E.noise_ceilings(cfg), n_classes=n_classes)
fig.suptitle(f"Mean over {len(seeds)} seeds; error bars: std over seeds", y=1.03)
out.figure(fig, "report_seeds")
spread.groupby(["model", "dataset", "metric"])["std"].max().round(3)

# %% [markdown]
# ## Robustness (App. A.3): cosine-distance convexity and Euclidean OOOA

# %%
variant = E.layerwise(cfg, metric="cosine", similarity="euclidean")
robust = report.robustness(main, variant)
out.table(robust, "report_robustness", title="Robustness variants vs the main metrics (all layers and models)")
robust

# %% [markdown]
# ## The paper's claims, checked

# %%
trows = None
if transform_all is not None:
    src = transform_all["train_source"].iloc[0]
    trows = transform_all[transform_all["train_source"] == src]
claims = report.check_claims(wide, halves, trows, t2)
out.table(claims, "report_claims", title=f"The paper's claims on the {cfg.profile} profile")
claims[["claim", "status", "evidence"]]

# %% [markdown]
# ## Our numbers beside the paper's

# %%
models_match = all(m in report.PAPER_LABELS for m in cfg.models)
baselines = {ds: (float(g["value"].mean()), n_classes.get(ds))
             for ds, g in main[main["metric"] == "convexity_baseline"].groupby("dataset")}
ttabs = E.transform_tables(trows) if trows is not None else None
summary = report.summary_vs_paper(ceilings=E.noise_ceilings(cfg), baselines=baselines, halves=halves,
                                  transform_tables=ttabs, table2=t2, robust=robust, models_match=models_match)
out.table(summary, "report_vs_paper", title="Headline numbers: ours vs the paper")
per_layer = report.per_layer_vs_paper(wide)
if len(per_layer):
    out.table(per_layer, "report_per_layer_vs_paper", title="Per-layer values vs the digitised Fig. 2")
summary

# %%
wide_plot = wide.copy()
wide_plot["paper_key"] = [report.PAPER_LABELS[m][1:] if m in report.PAPER_LABELS else None for m in wide_plot["model"]]
fig = overlay_paper(wide_plot, report.paper_reference("fig2_layers"), model_colours(wide_plot))
out.figure(fig, "report_overlay")
fig
