"""The paper's experiments as functions of a validated :class:`~convexlib.profiles.Config`.

The notebooks call these and only plot and print; every number is computed (and cached) here.

* :func:`evaluation_sets` — for one model and profile, the labelled sets whose graph convexity is measured and
  the item set + triplets on which OOOA is measured (SPEC §8 E0).
* :func:`layerwise` — per-layer convexity and OOOA of every model of the profile (E1–E3), as a tidy table with
  columns ``profile, model, label, family, variant, group, size, n_layers, layer, depth, dataset, metric,
  value, seed`` (metrics: ``convexity``, ``convexity_sem``, ``convexity_baseline``, ``oooa``).

Which data each profile uses is described in :mod:`convexlib.profiles`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import __version__
from . import data as D
from .alignment import odd_one_out_accuracy
from .cache import array_checksum, cached_arrays
from .convexity import ALGORITHM_VERSION, graph_convexity
from .data.sets import ImageSet, TextSet
from .features import extract, things_texts
from .models import ModelSpec, get_spec
from .profiles import Config
from .stats import normalized_depth

ItemSet = ImageSet | TextSet


@dataclass(frozen=True)
class LabelledSet:
    """Items whose class regions are measured: features of ``items`` rows ``rows``, classes ``labels``."""

    name: str
    items: ItemSet
    rows: np.ndarray
    labels: np.ndarray
    dropped: dict  # class -> size, for classes below the minimum size

    def class_sizes(self) -> dict:
        vals, counts = np.unique(self.labels, return_counts=True)
        return dict(zip(vals.tolist(), counts.tolist()))


@dataclass(frozen=True)
class TripletSet:
    """Items and the human odd-one-out judgements over them."""

    name: str
    items: ItemSet
    triplets: D.Triplets


def _drop_small(labels: np.ndarray, min_size: int) -> tuple[np.ndarray, dict]:
    vals, counts = np.unique(labels, return_counts=True)
    small = {v: int(c) for v, c in zip(vals.tolist(), counts.tolist()) if c < min_size}
    keep = ~np.isin(labels, list(small))
    return keep, small


def _labelled(name: str, items: ItemSet, labels: np.ndarray, rows: np.ndarray, min_size: int) -> LabelledSet:
    keep, small = _drop_small(labels, min_size)
    return LabelledSet(name, items, rows[keep], labels[keep], small)


def things_concept_texts(cfg: Config) -> TextSet:
    """The 1,854 THINGS concepts rendered as ``"{Word}: {definition}"``."""
    return things_texts(D.load_concepts(cfg.data_path))


def evaluation_sets(cfg: Config, spec: ModelSpec, seed: int | None = None) -> tuple[list[LabelledSet], TripletSet | None]:
    """The convexity sets and the OOOA set of one model under a profile.

    Parameters
    ----------
    cfg : Config
    spec : ModelSpec
    seed : int, optional
        Seed of random image draws (default ``cfg.seed``).

    Returns
    -------
    convexity_sets : list of LabelledSet (the first is the primary one, used for correlations)
    oooa_set : TripletSet or None
    """
    seed = cfg.seed if seed is None else seed
    root = cfg.data_path
    if spec.modality == "text":
        texts = things_concept_texts(cfg)
        labels = D.superclass_labels(root).to_numpy()
        rows = np.flatnonzero(pd.notna(labels))
        conv = _labelled("things-superclasses", texts, labels[rows].astype(str), rows, cfg.min_class_size)
        oooa = TripletSet("things-human-20k", texts, D.load_human_test_triplets(root))
        return [conv], oooa
    if cfg.profile == "paper":
        images = D.things_superclass_images(root, n_per_class=cfg.images_per_class, seed=seed)
        conv = _labelled("things-superclasses", images, np.asarray(images.labels), np.arange(len(images)),
                         cfg.min_class_size)
        trip_images = D.things_triplet_images(root)
        oooa = TripletSet("things-triplets", trip_images, D.load_things_triplets(root))
        return [conv], oooa
    # offline and tiny: real photos available offline
    sets = []
    if cfg.profile == "offline":
        inet = D.imagenet_things_images(root)
        sets.append(_labelled("imagenet-things", inet, np.asarray(inet.labels), np.arange(len(inet)),
                              cfg.min_class_size))
    cifar = D.cifar10_images(root, n_per_class=cfg.images_per_class, seed=seed)
    sets.append(_labelled("cifar10", cifar, np.asarray(cifar.labels), np.arange(len(cifar)), cfg.min_class_size))
    k92 = D.kriegeskorte_images(root)
    oooa = TripletSet("kriegeskorte92-human", k92, D.kriegeskorte_triplets(root))
    return sets, oooa


def class_counts(cfg: Config) -> dict[str, int]:
    """Number of classes C of every convexity set the profile's models use (set name -> C).

    1/C is the share of a path's interior that a random class assignment would keep in the class on average (the
    paper's 1/27 line); the label-permutation baseline is the same idea measured on the actual graph.
    """
    out: dict[str, int] = {}
    for name in cfg.models:
        for s in evaluation_sets(cfg, get_spec(name))[0]:
            out.setdefault(s.name, len(s.class_sizes()))
    return out


THINGS_NOISE_CEILING = 67.22  # percent, Hebart et al. 2020 (the paper's §2.2)


def noise_ceiling_percent(tset: TripletSet) -> float:
    """Noise ceiling of a triplet set in percent: the majority agreement of its repeated judgements, or the
    published THINGS ceiling (67.22 %) for a THINGS set in which triplets are mostly judged once."""
    from .alignment import noise_ceiling

    nc = noise_ceiling(tset.triplets.array)
    if nc.n_judgements < 2 * nc.n_triplets:
        if tset.triplets.n_items == 1854:
            return THINGS_NOISE_CEILING
        return float("nan")
    return 100 * nc.majority


def noise_ceilings(cfg: Config) -> dict[str, float]:
    """Noise ceiling (percent) of every OOOA set the profile's models use."""
    out: dict[str, float] = {}
    for name in cfg.models:
        _, tset = evaluation_sets(cfg, get_spec(name))
        if tset is not None and tset.name not in out:
            out[tset.name] = noise_ceiling_percent(tset)
    return out


def group_of(cfg: Config, spec: ModelSpec) -> str:
    """The model group for the correlations: the paper's pretrained/finetuned, or (other profiles) the models
    as shipped ("pretrained") vs the ones this project fine-tuned itself ("finetuned"; names end in ``-ft``)."""
    if cfg.profile != "paper":
        return "finetuned" if spec.name.endswith("-ft") else "pretrained"
    return spec.variant


def convexity_per_layer(
    feats: dict[int, np.ndarray],
    lset: LabelledSet,
    cfg: Config,
    *,
    seed: int,
    metric: str = "euclidean",
    baseline: bool = True,
    progress: bool = False,
) -> dict[int, dict[str, float]]:
    """Graph convexity of ``lset`` at every layer of ``feats``, cached on the features' checksum.

    Returns
    -------
    dict layer -> {"convexity", "convexity_sem", "convexity_baseline", "unreachable"} (percent)
    """
    out = {}
    for layer, X in feats.items():
        Xs = X[lset.rows]
        key = {
            "what": "graph_convexity",
            "features": array_checksum(Xs),
            "labels": array_checksum(lset.labels.astype(str)),
            "n_neighbors": cfg.n_neighbors,
            "max_paths": cfg.max_paths,
            "metric": metric,
            "seed": seed,
            "baseline": baseline,
            "version": __version__,
            "algorithm": ALGORITHM_VERSION,
        }

        def compute(Xs=Xs):
            r = graph_convexity(Xs, lset.labels, n_neighbors=cfg.n_neighbors, max_paths=cfg.max_paths,
                                metric=metric, seed=seed, baseline=baseline, progress=progress)
            vals = [r.score, r.sem, np.nan if r.baseline_score is None else r.baseline_score,
                    100 * r.unreachable_fraction]
            return {"values": np.array(vals, dtype=np.float64)}

        v = cached_arrays(key, "convexity", compute, cache_dir=cfg.cache_path)["values"]
        out[layer] = {"convexity": float(v[0]), "convexity_sem": float(v[1]), "convexity_baseline": float(v[2]),
                      "unreachable": float(v[3])}
    return out


def oooa_per_layer(feats: dict[int, np.ndarray], tset: TripletSet, *, similarity: str = "cosine") -> dict[int, float]:
    """Zero-shot OOOA (percent) at every layer: per-dimension centring + ``similarity`` (paper: cosine)."""
    return {
        layer: odd_one_out_accuracy(X, tset.triplets.array, similarity=similarity, center=True).percent
        for layer, X in feats.items()
    }


def _rows(cfg: Config, spec: ModelSpec, layer: int, dataset: str, metric: str, value: float, seed: int) -> dict:
    return {
        "profile": cfg.profile, "model": spec.name, "label": spec.label or spec.name, "family": spec.family,
        "variant": spec.variant, "group": group_of(cfg, spec), "size": spec.size, "n_layers": spec.n_layers,
        "layer": layer, "depth": normalized_depth(layer, spec.n_layers), "dataset": dataset, "metric": metric,
        "value": value, "seed": seed,
    }


def model_features(cfg: Config, spec: ModelSpec | str, items: ItemSet, progress: bool = True) -> dict[int, np.ndarray]:
    """All-layer pooled features of ``items`` (cached)."""
    return extract(spec, items, batch_size=cfg.batch_size, device=cfg.device, cache_dir=cfg.cache_path,
                   progress=progress)


def layerwise(
    cfg: Config,
    models: Iterable[str] | None = None,
    *,
    seed: int | None = None,
    metric: str = "euclidean",
    similarity: str = "cosine",
    progress: bool = True,
) -> pd.DataFrame:
    """Per-layer graph convexity and OOOA of every model (Fig. 2a/2b), as a tidy table.

    Parameters
    ----------
    cfg : Config
    models : registry names, default ``cfg.models``
    seed : int, optional
        Seed of image draws and path sampling (default ``cfg.seed``).
    metric : distance of the convexity graph ("euclidean"; "cosine" is the App. A.3 variant)
    similarity : similarity of the OOOA ("cosine"; "euclidean" is the App. A.3 variant)

    Returns
    -------
    DataFrame (tidy; see the module docstring)
    """
    seed = cfg.seed if seed is None else seed
    rows = []
    for name in tqdm(list(models or cfg.models), desc="models", disable=not progress):
        spec = get_spec(name)
        conv_sets, oooa_set = evaluation_sets(cfg, spec, seed)
        cache: dict[str, dict[int, np.ndarray]] = {}

        def feats_of(items: ItemSet) -> dict[int, np.ndarray]:
            key = items.name + ":" + str(len(items))
            if key not in cache:
                cache[key] = model_features(cfg, spec, items, progress)
            return cache[key]

        for lset in conv_sets:
            per = convexity_per_layer(feats_of(lset.items), lset, cfg, seed=seed, metric=metric)
            for layer, vals in per.items():
                for m in ("convexity", "convexity_sem", "convexity_baseline"):
                    rows.append(_rows(cfg, spec, layer, lset.name, m, vals[m], seed))
        if oooa_set is not None:
            for layer, v in oooa_per_layer(feats_of(oooa_set.items), oooa_set, similarity=similarity).items():
                rows.append(_rows(cfg, spec, layer, oooa_set.name, "oooa", v, seed))
    return pd.DataFrame(rows)


def primary_wide(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, layer) with the primary convexity set's ``convexity`` and the ``oooa`` column.

    The primary convexity set of a model is the first one :func:`evaluation_sets` returns (THINGS
    superclasses; ImageNet photos of THINGS concepts for the offline image model; CIFAR-10 in the tiny profile).
    """
    conv = tidy[tidy["metric"] == "convexity"]
    first = conv.groupby("model", sort=False)["dataset"].first()
    conv = conv[conv["dataset"] == conv["model"].map(first)]
    oooa = tidy[tidy["metric"] == "oooa"]
    keys = ["model", "label", "family", "variant", "group", "size", "n_layers", "layer", "depth"]
    a = conv[keys + ["value", "dataset"]].rename(columns={"value": "convexity", "dataset": "convexity_set"})
    b = oooa[keys + ["value", "dataset"]].rename(columns={"value": "oooa", "dataset": "oooa_set"})
    return a.merge(b, on=keys, how="outer").sort_values(["model", "layer"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------
# the naive alignment transform (Tables 1, A.2-A.6)
# --------------------------------------------------------------------------------------------------------------

PAPER_TABLES = {
    ("pretrained", "last"): "table1",
    ("pretrained", "first"): "tableA2",
    ("pretrained", "middle"): "tableA3",
    ("finetuned", "last"): "tableA4",
    ("finetuned", "first"): "tableA5",
    ("finetuned", "middle"): "tableA6",
}


def subsample_triplets(tset: TripletSet, max_triplets: int, seed: int) -> np.ndarray:
    """The triplet array of ``tset``, or a seeded random subset of ``max_triplets`` judgements (rows kept in order)."""
    arr = tset.triplets.array
    if len(arr) <= max_triplets:
        return arr
    rng = np.random.default_rng([seed, 3])
    return arr[np.sort(rng.choice(len(arr), size=max_triplets, replace=False))]


def transform_rows(
    cfg: Config,
    model: str,
    *,
    positions: Iterable[str] = ("first", "middle", "last"),
    train_source: str = "human",
    lambdas: Iterable[float] | None = None,
    progress: bool = True,
) -> list[dict]:
    """Rows of Tables 1 / A.2–A.6 for one model: OOOA and graph convexity before and after the naive transform.

    At each layer position (first = block 1, middle = L // 2, last = L) the transform is cross-validated over
    the objects of the model's OOOA set (:func:`convexlib.transform.cross_validate`; 3 folds, seed
    ``cfg.seed``, lambda chosen by validation loss) and then applied to the model's primary convexity set at the
    same layer; convexity is recomputed with the same sampled pairs, giving a paired bootstrap CI.

    Parameters
    ----------
    train_source : "human" (the real judgements of the training objects) or "vice" (triplets simulated from the
        VICE human embedding; THINGS concepts only). OOOA is always reported on real held-out judgements.
    The OOOA Δ also gets a paired bootstrap 95 % CI over the pooled held-out judgements (``oooa_delta_ci_*``;
    its centre ``oooa_delta_pooled`` weights folds by their size). ``cfg.max_triplets`` judgements are used (a seeded subset when the set is larger, e.g. the 2 M Kriegeskorte
    triplets); ``cfg.n_simulated`` simulated training triplets per fold with ``train_source="vice"``.
    """
    from . import transform as T
    from .stats import layer_positions, paired_bootstrap_ci

    spec = get_spec(model)
    conv_sets, tset = evaluation_sets(cfg, spec)
    if tset is None:
        raise ValueError(f"{model}: the profile has no triplet set for this model")
    lset = conv_sets[0]
    vice = None
    if train_source == "vice":
        if tset.triplets.n_items != 1854:
            raise ValueError(f"{model}: VICE-simulated triplets exist only for the THINGS concepts")
        vice = D.load_vice_embedding(cfg.data_path)
    trip = subsample_triplets(tset, cfg.max_triplets, cfg.seed)
    feats_t = model_features(cfg, spec, tset.items, progress)
    feats_c = feats_t if lset.items is tset.items else model_features(cfg, spec, lset.items, progress)
    pos = layer_positions(spec.n_layers)
    rows = []
    cache = str(cfg.cache_path / "transforms") if cfg.cache_path else True
    for p in positions:
        layer = pos[p]
        cv = T.cross_validate(
            feats_t[layer], trip, lambdas=tuple(lambdas or T.DEFAULT_LAMBDAS), k=3, seed=cfg.seed,
            train_source=train_source, vice_embedding=vice, n_simulated=cfg.n_simulated,
            n_simulated_val=max(1000, cfg.n_simulated // 10), cache=cache, progress=progress, n_jobs=-1,
        )
        conv = T.convexity_before_after(
            cv.transform, feats_c[layer][lset.rows], lset.labels, seed=cfg.seed, n_neighbors=cfg.n_neighbors,
            max_paths=cfg.max_paths,
        )
        row = T.table_row(spec.label or spec.name, layer, cv, conv)
        oooa_ci = paired_bootstrap_ci(cv.correct_before.astype(float), cv.correct_after.astype(float),
                                      seed=cfg.seed)
        row.update({"oooa_delta_pooled": 100 * oooa_ci.delta, "oooa_delta_ci_low": 100 * oooa_ci.ci_low,
                    "oooa_delta_ci_high": 100 * oooa_ci.ci_high})
        row.update({"model_name": spec.name, "group": group_of(cfg, spec), "position": p,
                    "n_layers": spec.n_layers, "oooa_set": tset.name, "convexity_set": lset.name,
                    "n_triplets_used": int(len(trip))})
        rows.append(row)
    return rows


def transform_tables(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split transform rows into the paper's tables (group x position), each with an "avg ± std" row.

    Returns
    -------
    dict table name (``table1``, ``tableA2``, ...; ``transform_<group>_<position>`` for other groups) -> DataFrame
    with columns model, layer, OOOA orig, OOOA Δ, convexity orig, convexity Δ, Δ 95% CI, lambda; with two or more
    models, two more rows hold the mean and the sample std (ddof=1) of the Δ columns (SPEC §4.6).
    """
    from .stats import mean_std

    out = {}
    for (group, position), sub in rows.groupby(["group", "position"], sort=False):
        name = PAPER_TABLES.get((group, position), f"transform_{group}_{position}")
        t = pd.DataFrame({
            "model": sub["model"], "layer": sub["layer"], "OOOA orig": sub["oooa_orig"],
            "OOOA held-out before": sub["oooa_heldout_before"], "OOOA Δ": sub["oooa_delta"],
            "OOOA Δ CI low": sub["oooa_delta_ci_low"], "OOOA Δ CI high": sub["oooa_delta_ci_high"],
            "convexity orig": sub["convexity_orig"], "convexity Δ": sub["convexity_delta"],
            "convexity Δ CI low": sub["convexity_delta_ci_low"], "convexity Δ CI high": sub["convexity_delta_ci_high"],
            "lambda": sub["lambda"], "train source": sub["train_source"],
        })
        if len(sub) >= 2:
            (mo, so), (mc, sc) = mean_std(sub["oooa_delta"]), mean_std(sub["convexity_delta"])
            summary = pd.DataFrame([{"model": "avg", "OOOA Δ": mo, "convexity Δ": mc},
                                    {"model": "std (ddof=1)", "OOOA Δ": so, "convexity Δ": sc}])
            t = pd.concat([t, summary], ignore_index=True)
        out[name] = t.reset_index(drop=True)
    return out


def data_provenance(cfg: Config, models: Iterable[str] | None = None) -> dict[str, str]:
    """Checksums of everything a profile's results are computed from, for the output manifest.

    Returns
    -------
    dict name -> sha256: the data files read (paths relative to the data root) and, per evaluation set, the
    content fingerprint of its items (``itemset:<name>``: sha256 over image bytes or texts, in order).
    """
    from .data import layout
    from .outputs import file_sha256
    from .paths import data_root

    root = data_root(cfg.data_path)
    out: dict[str, str] = {}
    for rel in (layout.THINGS_CONCEPTS, layout.TEST_TRIPLETS, layout.SORTINDEX, layout.IMAGENET_OVERLAP,
                layout.KRIEGESKORTE_STIMULI, layout.KRIEGESKORTE_SIMJUDGE, layout.THINGSPLUS_CATEGORIES,
                layout.VICE_EMBEDDING):
        if (root / rel).is_file():
            out[rel] = file_sha256(root / rel)
    for name in models or cfg.models:
        sets, tset = evaluation_sets(cfg, get_spec(name))
        for s in sets:
            out.setdefault(f"itemset:{s.name}", s.items.fingerprint())
        if tset is not None:
            out.setdefault(f"itemset:{tset.name}", tset.items.fingerprint())
    return out
