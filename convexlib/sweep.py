"""Sweeps over many models, layers, seeds and distance variants, run as tasks on Dask (issue 10).

A *sweep* is the grid ``model x data set x layer x metric x seed x variant`` of the layer-wise experiment
(:func:`convexlib.experiments.layerwise`, notebook 01). The data sets of a model are those of its profile
(:func:`convexlib.experiments.evaluation_sets`): its convexity sets (metrics ``convexity``, ``convexity_sem``,
``convexity_baseline``) and its OOOA set (metric ``oooa``).

Variants
--------
``"euclidean"``
    The paper's metrics: Euclidean kNN graph for convexity, centred cosine similarity for OOOA.
``"cosine"``
    The App. A.3 robustness variant (notebook 05): cosine-distance graph for convexity, Euclidean OOOA.
``"<convexity distance>:<OOOA similarity>"``
    Any other pair, e.g. ``"cosine:cosine"``.

Units
-----
The grid is cut into units, each one Dask task writing one file atomically under ``<sweep_dir>/units/``:

* **features** ``("features", model, item set, draw seed)``: all-layer features of one item set, written to the
  shared on-disk feature cache (:mod:`convexlib.features`; one entry holds all layers). An item set that does
  not depend on the seed (THINGS texts, ImageNet photos, Kriegeskorte-92) is one unit for all seeds; its seed is
  the smallest sweep seed. The unit file (``.json``) records the cache entry's path and key. Features tasks ask
  for the Dask worker resource ``MODEL=1`` and every worker offers one, so a worker extracts with at most one
  model at a time; the model is loaded inside :func:`convexlib.features.extract` and dropped when it returns.
* **metrics** ``("metrics", model, data set, layer, distance, seed)``: graph convexity of one layer (distance =
  the graph's, seed = the path-sampling and image-draw seed), or OOOA of one layer (distance = the similarity).
  OOOA involves no randomness, so one OOOA unit serves every seed that sees the same items (its seed is the
  draw seed). A metrics unit reads only its layer from the features unit's cache entry (``.csv`` result).

Resume: a unit whose file exists and loads is skipped, so a sweep interrupted half-way (Ctrl-C, a killed job,
a lost worker) is rerun with the same command and computes only the missing units. A sweep directory may be
extended with more models, seeds, variants or layers; it refuses other metric parameters (profile, ``k``,
``max_paths``, image draws), which would mix incomparable numbers.

Results
-------
``<sweep_dir>/results.csv`` is the tidy table of notebook 01 (columns :data:`LAYERWISE_COLUMNS`) plus
``metric_variant``, assembled from the unit files in a canonical order (variant, seed, model, data set, layer,
metric, in the order given), so it is byte-identical whatever order units finished in and whether they ran
sequentially or on a cluster: convexity is deterministic for the same features and seed, the features come from
the one shared cache entry (the same bytes for every worker), and floats are written in their shortest
round-trip form (``repr``). Features computed on different hardware or thread counts agree only to float32
rounding, so compare sweeps that share a feature cache. :func:`results_for_notebook` gives the table of one
variant and seed in exactly the layout of :func:`convexlib.experiments.layerwise`.

Where units run
---------------
* sequentially in this process (default; a tqdm bar over units; convexity uses ``n_jobs`` processes as in the
  notebooks);
* a :class:`dask.distributed.LocalCluster` of ``workers`` processes (``--workers N``);
* any scheduler (``--scheduler tcp://host:8786``), or a :class:`dask.distributed.Client` you pass in; its workers
  must offer the resource ``MODEL=1`` (``dask worker ... --resources MODEL=1``) and see the same file system
  (data root, cache dir, sweep dir) as this process. The dashboard link is printed when there is one (the
  dashboard needs ``bokeh``).

On a Dask worker convexity runs with ``n_jobs=1`` (Dask supplies the parallelism; worker processes are daemons
and cannot fork pools), and convexity calls are serialised within a worker process (the metric core keeps one
graph per process), so ``threads_per_worker > 1`` only overlaps OOOA and file I/O.

Examples
--------
Command line (the offline metric sweep of the issue's benchmark)::

    python -m convexlib.sweep --profile offline --models minilm dinov2-s-imgfocus --seeds 42 43 44 \\
        --variants euclidean cosine --workers 2 --out sweeps/offline
    python -m convexlib.sweep --profile tiny --out sweeps/tiny -p max_paths=50     # sequential

From Python::

    from convexlib import profiles, sweep as S
    spec = S.make_spec(profiles.resolve("tiny"), seeds=[42, 43], variants=["euclidean", "cosine"])
    res = S.run_sweep(spec, "sweeps/tiny", workers=2)
    tidy = S.results_for_notebook("sweeps/tiny", seed=42)         # notebook 01's table

On a SLURM cluster with ``dask-jobqueue`` (not a dependency; data root, cache and sweep dir on a shared file
system; one GPU job per worker)::

    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster
    from convexlib import profiles, sweep as S

    cluster = SLURMCluster(
        cores=8, processes=1, memory="64GB", walltime="06:00:00", queue="gpu",
        job_extra_directives=["--gres=gpu:1"],
        worker_extra_args=["--resources", "MODEL=1"],          # one model per worker at a time
        job_script_prologue=["source /shared/convexity-alignment/.venv/bin/activate",
                             "export CONVEXLIB_DATA=/shared/data CONVEXLIB_CACHE=/shared/cache"],
    )
    cluster.scale(jobs=16)
    client = Client(cluster)
    print(client.dashboard_link)
    cfg = profiles.resolve("paper", data_root="/shared/data", cache_dir="/shared/cache")
    spec = S.make_spec(cfg, seeds=[42, 43, 44], variants=["euclidean", "cosine"])
    S.run_sweep(spec, "/shared/sweeps/paper", client=client)

or start the scheduler and workers yourself and pass ``--scheduler tcp://<host>:8786`` to the command line.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import __version__
from .cache import canonical_json, load_arrays
from .errors import CacheError, ConvexlibError
from .profiles import Config

__all__ = [
    "VARIANTS",
    "LAYERWISE_COLUMNS",
    "SWEEP_COLUMNS",
    "SweepSpec",
    "Unit",
    "Plan",
    "SweepResult",
    "parse_variant",
    "make_spec",
    "plan_sweep",
    "run_sweep",
    "load_results",
    "results_for_notebook",
    "main",
]

log = logging.getLogger(__name__)

#: Named variants: name -> (convexity graph distance, OOOA similarity).
VARIANTS: dict[str, tuple[str, str]] = {"euclidean": ("euclidean", "cosine"), "cosine": ("cosine", "euclidean")}
_CONVEXITY_DISTANCES = ("euclidean", "cosine")
_OOOA_SIMILARITIES = ("cosine", "euclidean", "dot")

#: Columns of :func:`convexlib.experiments.layerwise` (notebook 01's ``layerwise.csv``).
LAYERWISE_COLUMNS = ["profile", "model", "label", "family", "variant", "group", "size", "n_layers", "layer", "depth",
                     "dataset", "metric", "value", "seed"]
#: Columns of a sweep's ``results.csv``.
SWEEP_COLUMNS = LAYERWISE_COLUMNS + ["metric_variant"]

CONVEXITY_METRICS = ("convexity", "convexity_sem", "convexity_baseline")
OOOA_METRICS = ("oooa",)
MODEL_RESOURCE = "MODEL"
SPEC_FILE = "sweep.json"
RESULTS_FILE = "results.csv"
UNITS_DIR = "units"
FORMAT = 1
# Parameters that determine the numbers of a unit beyond its id; a sweep dir refuses a change in any of them.
_FIXED_PARAMS = ("profile", "n_neighbors", "max_paths", "images_per_class", "min_class_size")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


# --------------------------------------------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------------------------------------------


def parse_variant(name: str) -> tuple[str, str]:
    """``(convexity distance, OOOA similarity)`` of a variant name (see the module docstring).

    Raises
    ------
    ValueError
        Unknown name or distance.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a variant must be a non-empty string, got {name!r}")
    if name in VARIANTS:
        return VARIANTS[name]
    if ":" not in name:
        raise ValueError(f"unknown variant {name!r}; use one of {sorted(VARIANTS)} or '<distance>:<similarity>'")
    dist, sim = name.split(":", 1)
    if dist not in _CONVEXITY_DISTANCES:
        raise ValueError(f"variant {name!r}: convexity distance must be one of {_CONVEXITY_DISTANCES}, got {dist!r}")
    if sim not in _OOOA_SIMILARITIES:
        raise ValueError(f"variant {name!r}: OOOA similarity must be one of {_OOOA_SIMILARITIES}, got {sim!r}")
    return dist, sim


@dataclass(frozen=True)
class SweepSpec:
    """The grid of a sweep: a profile's configuration and the models, seeds, variants, layers and data sets.

    ``layers`` / ``datasets`` of ``None`` mean every layer 1..L of each model / every data set of its profile.
    """

    cfg: Config
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    variants: tuple[str, ...] = ("euclidean",)
    layers: tuple[int, ...] | None = None
    datasets: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"cfg": self.cfg.as_dict(), "models": list(self.models), "seeds": list(self.seeds),
                "variants": list(self.variants), "layers": None if self.layers is None else list(self.layers),
                "datasets": None if self.datasets is None else list(self.datasets)}


def _unique(values: Sequence, what: str) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{what} is empty")
    dup = sorted({v for v in values if values.count(v) > 1}, key=str)
    if dup:
        raise ValueError(f"{what} has duplicates: {dup}")
    return values


def make_spec(
    cfg: Config,
    *,
    models: Iterable[str] | None = None,
    seeds: Iterable[int] | None = None,
    variants: Iterable[str] = ("euclidean",),
    layers: Iterable[int] | None = None,
    datasets: Iterable[str] | None = None,
) -> SweepSpec:
    """Validate a sweep grid.

    Parameters
    ----------
    cfg : Config
        From :func:`convexlib.profiles.resolve` (profile, data, ``k``, ``max_paths``, image draws, cache).
    models : registry names, default ``cfg.models``
    seeds : ints, default ``cfg.seed, cfg.seed + 1, ..., cfg.seed + cfg.n_seeds - 1`` (as notebook 05)
    variants : variant names (module docstring), default the paper's ``("euclidean",)``
    layers : layers to measure (1-based), default all layers of each model
    datasets : names of data sets to keep (e.g. ``["cifar10"]``), default all of the profile

    Raises
    ------
    ValueError
        Unknown model or variant, empty or duplicated values, non-integer seeds or layers < 1.
    """
    from .models import get_spec

    if not isinstance(cfg, Config):
        raise ValueError(f"cfg must be a convexlib.profiles.Config, got {type(cfg).__name__}")
    models_t = _unique(list(cfg.models if models is None else models), "models")
    for m in models_t:
        if not isinstance(m, str):
            raise ValueError(f"model names must be strings, got {m!r}")
        get_spec(m)  # raises ModelNotAvailableError / ValueError naming it
    seeds_t = _unique(list(range(cfg.seed, cfg.seed + cfg.n_seeds)) if seeds is None else list(seeds), "seeds")
    for s in seeds_t:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"seeds must be non-negative integers, got {s!r}")
    seeds_t = tuple(int(s) for s in seeds_t)
    variants_t = _unique([variants] if isinstance(variants, str) else list(variants), "variants")
    for v in variants_t:
        parse_variant(v)
    layers_t = None
    if layers is not None:
        layers_t = _unique(list(layers), "layers")
        for layer in layers_t:
            if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 1:
                raise ValueError(f"layers must be integers >= 1, got {layer!r}")
        layers_t = tuple(sorted(int(x) for x in layers_t))
    datasets_t = None
    if datasets is not None:
        datasets_t = _unique([datasets] if isinstance(datasets, str) else list(datasets), "datasets")
    return SweepSpec(cfg, models_t, seeds_t, variants_t, layers_t, datasets_t)


@dataclass(frozen=True)
class Unit:
    """One task of a sweep.

    ``kind`` "features": ``dataset`` is the item set's name, ``seed`` the draw seed, ``layer``/``distance`` None.
    ``kind`` "metrics": ``dataset`` is the evaluation set's name, ``metric`` "convexity" or "oooa", ``distance``
    the convexity graph's distance or the OOOA similarity, ``seed`` the sampling (convexity) or draw (OOOA) seed.
    """

    kind: str
    model: str
    dataset: str
    seed: int
    layer: int | None = None
    distance: str | None = None
    metric: str | None = None

    @property
    def uid(self) -> str:
        """File-system-safe id, e.g. ``metrics--minilm--things-superclasses--L003--euclidean--s42``."""
        if self.kind == "features":
            parts = ["features", self.model, self.dataset, f"s{self.seed}"]
        else:
            parts = ["metrics", self.model, self.dataset, f"L{self.layer:03d}", str(self.distance), f"s{self.seed}"]
        raw = "--".join(parts)
        safe = _SAFE.sub("_", raw)
        if safe != raw:  # sanitising could make two names collide: disambiguate by the raw name's hash
            safe += "~" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:8]
        return safe

    @property
    def filename(self) -> str:
        return self.uid + (".json" if self.kind == "features" else ".csv")


@dataclass(frozen=True)
class _Slot:
    """One row of the tidy results and the unit whose value fills it."""

    variant: str
    seed: int
    model: str
    dataset: str
    layer: int
    metric: str
    unit: str


@dataclass
class Plan:
    """The units of a sweep, their dependencies and the rows of its results, in canonical order.

    Attributes
    ----------
    features, metrics : list of Unit (execution order: model by model)
    depends : dict metrics uid -> features uid
    fingerprints : dict features uid -> content fingerprint of its item set
    slots : the rows of ``results.csv`` in order
    """

    spec: SweepSpec
    features: list[Unit]
    metrics: list[Unit]
    depends: dict[str, str]
    fingerprints: dict[str, str]
    slots: list[_Slot] = field(repr=False)

    @property
    def units(self) -> list[Unit]:
        return self.features + self.metrics

    def __len__(self) -> int:
        return len(self.features) + len(self.metrics)


# --------------------------------------------------------------------------------------------------------------
# per-process memo of evaluation sets (data, never models)
# --------------------------------------------------------------------------------------------------------------

_SETS_MEMO: "OrderedDict[tuple, tuple]" = OrderedDict()
_SETS_MEMO_SIZE = 4
_FP_MEMO: dict[tuple, str] = {}
_MEMO_LOCK = threading.Lock()
_CONVEXITY_LOCK = threading.Lock()  # convexlib.convexity keeps its graph in a module global


def _cfg_from(d: dict[str, Any]) -> Config:
    return Config(**d)


def _eval_sets(cfg: Config, model: str, seed: int):
    """:func:`convexlib.experiments.evaluation_sets`, memoised per process (a few entries)."""
    from . import experiments as E
    from .models import get_spec

    key = (canonical_json(cfg.as_dict()), model, int(seed))
    with _MEMO_LOCK:
        if key in _SETS_MEMO:
            _SETS_MEMO.move_to_end(key)
            return _SETS_MEMO[key]
    value = E.evaluation_sets(cfg, get_spec(model), seed)
    with _MEMO_LOCK:
        _SETS_MEMO[key] = value
        while len(_SETS_MEMO) > _SETS_MEMO_SIZE:
            _SETS_MEMO.popitem(last=False)
    return value


def _fingerprint(items) -> str:
    """Content fingerprint of an item set, memoised on its content (image paths or texts)."""
    key = (type(items).__name__, getattr(items, "paths", None) or getattr(items, "texts", None))
    with _MEMO_LOCK:
        if key in _FP_MEMO:
            return _FP_MEMO[key]
    fp = items.fingerprint()
    with _MEMO_LOCK:
        _FP_MEMO[key] = fp
    return fp


def _resolved_cfg(cfg: Config) -> Config:
    """``cfg`` with absolute data root and cache dir, so that workers read and write the same files."""
    from .paths import cache_dir, data_root

    return dataclasses.replace(cfg, data_root=str(data_root(cfg.data_root or None)),
                               cache_dir=str(cache_dir(cfg.cache_dir or None)))


def plan_sweep(spec: SweepSpec) -> Plan:
    """The units and result rows of a sweep (reads the evaluation sets, loads no model).

    Raises
    ------
    ValueError
        A requested layer beyond a model's depth, or a data set name that no model has.
    """
    from .models import get_spec

    cfg = spec.cfg
    features: dict[str, Unit] = {}
    fingerprints: dict[str, str] = {}
    metrics: dict[str, Unit] = {}
    depends: dict[str, str] = {}
    seen_datasets: set[str] = set()
    slots_by: dict[tuple, list[_Slot]] = {}
    per_model_features: dict[str, list[Unit]] = {m: [] for m in spec.models}
    per_model_metrics: dict[str, list[Unit]] = {m: [] for m in spec.models}
    for model in spec.models:
        mspec = get_spec(model)
        layers = spec.layers or tuple(range(1, mspec.n_layers + 1))
        too_deep = [x for x in layers if x > mspec.n_layers]
        if too_deep:
            raise ValueError(f"layers {too_deep} exceed the {mspec.n_layers} layers of {model}")
        # the smallest seed that draws each distinct item set
        draw_seed: dict[str, int] = {}
        sets_of: dict[int, list[tuple[Any, str, str]]] = {}
        for seed in sorted(spec.seeds):
            conv_sets, oooa_set = _eval_sets(cfg, model, seed)
            entries = [(s, s.name, "convexity") for s in conv_sets]
            if oooa_set is not None:
                entries.append((oooa_set, oooa_set.name, "oooa"))
            kept = []
            for obj, name, kind in entries:
                seen_datasets.add(name)
                if spec.datasets is not None and name not in spec.datasets:
                    continue
                fp = _fingerprint(obj.items)
                draw_seed.setdefault(fp, seed)
                kept.append((obj, name, kind, fp))
            sets_of[seed] = kept
        for seed in spec.seeds:
            for obj, name, kind, fp in sets_of[seed]:
                fu = Unit("features", model, obj.items.name, draw_seed[fp])
                if fu.uid in fingerprints and fingerprints[fu.uid] != fp:
                    raise ValueError(f"{model}: two different item sets named {obj.items.name!r} for seed "
                                     f"{draw_seed[fp]}; item sets need distinct names")
                if fu.uid not in features:
                    features[fu.uid] = fu
                    fingerprints[fu.uid] = fp
                    per_model_features[model].append(fu)
                for variant in spec.variants:
                    dist, sim = parse_variant(variant)
                    for layer in layers:
                        if kind == "convexity":
                            mu = Unit("metrics", model, name, seed, layer, dist, "convexity")
                            names = CONVEXITY_METRICS
                        else:
                            mu = Unit("metrics", model, name, draw_seed[fp], layer, sim, "oooa")
                            names = OOOA_METRICS
                        if mu.uid not in metrics:
                            metrics[mu.uid] = mu
                            depends[mu.uid] = fu.uid
                            per_model_metrics[model].append(mu)
                        slots_by.setdefault((variant, seed, model), []).extend(
                            _Slot(variant, seed, model, name, layer, m, mu.uid) for m in names)
    if spec.datasets is not None:
        unknown = [d for d in spec.datasets if d not in seen_datasets]
        if unknown:
            raise ValueError(f"unknown data set(s) {unknown}; the models of profile {cfg.profile!r} have "
                             f"{sorted(seen_datasets)}")
    slots = [s for v in spec.variants for seed in spec.seeds for m in spec.models
             for s in slots_by.get((v, seed, m), [])]
    order_f = [u for m in spec.models for u in per_model_features[m]]
    order_m = [u for m in spec.models for u in per_model_metrics[m]]
    return Plan(spec, order_f, order_m, depends, fingerprints, slots)


# --------------------------------------------------------------------------------------------------------------
# unit files
# --------------------------------------------------------------------------------------------------------------

_UNIT_CSV_FIELDS = ["unit", "model", "dataset", "layer", "distance", "seed", "metric", "value", "pid", "seconds"]


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float) -> str:
    """Shortest round-trip text of a float (``repr``; ``nan`` for NaN)."""
    return repr(float(value))


def _write_metrics_file(path: Path, unit: Unit, values: dict[str, float], seconds: float) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_UNIT_CSV_FIELDS)
    for name, v in values.items():
        w.writerow([unit.uid, unit.model, unit.dataset, unit.layer, unit.distance, unit.seed, name, _fmt(v),
                    os.getpid(), f"{seconds:.3f}"])
    _atomic_write_text(path, buf.getvalue())


def _read_metrics_file(path: Path, unit: Unit) -> dict[str, float] | None:
    """The values of a finished metrics unit, or None when its file is absent or not a complete result."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    want = CONVEXITY_METRICS if unit.metric == "convexity" else OOOA_METRICS
    try:
        values = {r["metric"]: float(r["value"]) for r in rows if r.get("unit") == unit.uid}
    except (KeyError, TypeError, ValueError):
        return None
    if len(rows) != len(want) or set(values) != set(want):
        return None
    return values


def _read_features_file(path: Path, unit: Unit, fingerprint: str) -> dict[str, Any] | None:
    """The marker of a finished features unit whose cache entry still exists, else None."""
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("unit") != unit.uid or marker.get("fingerprint") != fingerprint:
        return None
    if not isinstance(marker.get("key"), dict) or not Path(str(marker.get("path", ""))).is_file():
        return None
    return marker


# --------------------------------------------------------------------------------------------------------------
# the tasks (top-level functions: they run in Dask workers)
# --------------------------------------------------------------------------------------------------------------


def _features_task(cfg_d: dict, unit: Unit, fingerprint: str, out_path: str) -> dict[str, Any]:
    """Extract (or find in the cache) the all-layer features of one item set; write the unit's marker."""
    from .features import feature_cache_path, feature_key
    from .models import get_spec
    from . import experiments as E

    started = time.time()
    cfg = _cfg_from(cfg_d)
    spec = get_spec(unit.model)
    conv_sets, oooa_set = _eval_sets(cfg, unit.model, unit.seed)
    candidates = [s.items for s in conv_sets] + ([oooa_set.items] if oooa_set is not None else [])
    items = next((it for it in candidates if it.name == unit.dataset and _fingerprint(it) == fingerprint), None)
    if items is None:
        raise ConvexlibError(f"{unit.uid}: no item set {unit.dataset!r} with fingerprint {fingerprint[:12]} "
                             f"(did the data under {cfg.data_root} change since the sweep was planned?)")
    feats = E.model_features(cfg, spec, items, progress=False)  # loads the model only on a cache miss
    shapes = {str(layer): list(a.shape) for layer, a in feats.items()}
    del feats
    gc.collect()  # nothing of the model outlives extract(); drop its arrays too
    key = feature_key(spec, items, spec.pooling, fingerprint=fingerprint)
    path = feature_cache_path(spec, key, cfg.cache_path)
    if not path.is_file():
        raise CacheError(f"{unit.uid}: features were extracted but no cache entry is at {path}")
    marker = {"unit": unit.uid, "model": unit.model, "dataset": unit.dataset, "seed": unit.seed,
              "fingerprint": fingerprint, "path": str(path), "key": key, "shapes": shapes, "pid": os.getpid(),
              "host": socket.gethostname(), "started": started, "finished": time.time(), "convexlib": __version__}
    _atomic_write_text(Path(out_path), json.dumps(marker, sort_keys=True, indent=1))
    return marker


def _metrics_task(cfg_d: dict, unit: Unit, marker: dict[str, Any], out_path: str, n_jobs: int) -> dict[str, float]:
    """Convexity or OOOA of one layer from the features unit's cache entry; write the unit's CSV."""
    from . import experiments as E
    from .convexity import graph_convexity
    from .features import _layer_name

    t0 = time.perf_counter()
    cfg = _cfg_from(cfg_d)
    name = _layer_name(unit.layer)
    try:
        arrays, _ = load_arrays(marker["path"], [name], expect_key=marker["key"])
    except (FileNotFoundError, CacheError) as exc:
        raise CacheError(f"{unit.uid}: cannot read its features ({exc}). The cache dir must be shared by all "
                         f"workers; delete {marker['unit']}.json in the sweep's units folder and rerun to "
                         f"re-extract them") from None
    X = arrays[name]
    conv_sets, oooa_set = _eval_sets(cfg, unit.model, unit.seed)
    if unit.metric == "convexity":
        lset = next((s for s in conv_sets if s.name == unit.dataset), None)
        if lset is None:
            raise ConvexlibError(f"{unit.uid}: {unit.model} has no convexity set {unit.dataset!r}")
        with _CONVEXITY_LOCK:
            r = graph_convexity(X[lset.rows], lset.labels, n_neighbors=cfg.n_neighbors, max_paths=cfg.max_paths,
                                metric=unit.distance, seed=unit.seed, baseline=True, n_jobs=n_jobs, progress=False)
        values = {"convexity": float(r.score), "convexity_sem": float(r.sem),
                  "convexity_baseline": math.nan if r.baseline_score is None else float(r.baseline_score)}
    else:
        if oooa_set is None or oooa_set.name != unit.dataset:
            raise ConvexlibError(f"{unit.uid}: {unit.model} has no OOOA set {unit.dataset!r}")
        values = {"oooa": float(E.oooa_per_layer({unit.layer: X}, oooa_set, similarity=unit.distance)[unit.layer])}
    _write_metrics_file(Path(out_path), unit, values, time.perf_counter() - t0)
    return values


# --------------------------------------------------------------------------------------------------------------
# running a sweep
# --------------------------------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes
    ----------
    sweep_dir, results_path : paths
    tidy : DataFrame with :data:`SWEEP_COLUMNS`
    n_units : units in the plan
    computed, skipped : uids of the units run now / found finished on disk
    seconds : wall time of the whole call
    mode : "sequential", "local-cluster" or "scheduler"
    """

    sweep_dir: Path
    results_path: Path
    tidy: pd.DataFrame
    n_units: int
    computed: list[str]
    skipped: list[str]
    seconds: float
    mode: str


OnUnitDone = Callable[[Unit, int, int], None]


def _check_sweep_dir(sweep_dir: Path, spec: SweepSpec) -> None:
    """Write ``sweep.json``; refuse a directory holding a sweep with other metric parameters."""
    path = sweep_dir / SPEC_FILE
    fixed = {k: getattr(spec.cfg, k) for k in _FIXED_PARAMS}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            old_fixed = {k: old["spec"]["cfg"][k] for k in _FIXED_PARAMS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a sweep description ({exc}); use another --out") from None
        diff = {k: (old_fixed[k], fixed[k]) for k in _FIXED_PARAMS if old_fixed[k] != fixed[k]}
        if diff:
            raise ValueError(f"{sweep_dir} holds a sweep with other parameters (old, new): {diff}; "
                             f"use another sweep directory")
    doc = {"format": FORMAT, "convexlib": __version__, "spec": spec.as_dict(), "fixed": fixed}
    _atomic_write_text(path, json.dumps(doc, sort_keys=True, indent=1))


def _scan(plan: Plan, units_dir: Path) -> tuple[dict[str, dict], set[str]]:
    """Markers of finished features units and the uids of finished metrics units."""
    markers: dict[str, dict] = {}
    for u in plan.features:
        m = _read_features_file(units_dir / u.filename, u, plan.fingerprints[u.uid])
        if m is not None:
            markers[u.uid] = m
    done_m = {u.uid for u in plan.metrics if _read_metrics_file(units_dir / u.filename, u) is not None}
    return markers, done_m


def _metric_units_todo(plan: Plan, markers: dict, done_m: set[str]) -> tuple[list[Unit], list[Unit]]:
    todo_m = [u for u in plan.metrics if u.uid not in done_m]
    needed = {plan.depends[u.uid] for u in todo_m}
    todo_f = [u for u in plan.features if u.uid not in markers and u.uid in needed]
    return todo_f, todo_m


def _run_sequential(plan, todo_f, todo_m, markers, cfg_d, units_dir, n_jobs, progress, on_unit_done) -> list[str]:
    done: list[str] = []
    total = len(todo_f) + len(todo_m)
    by_model = {m: ([u for u in todo_f if u.model == m], [u for u in todo_m if u.model == m])
                for m in plan.spec.models}
    with tqdm(total=total, desc="sweep units", unit="unit", disable=not progress) as bar:
        for model in plan.spec.models:
            fs, ms = by_model[model]
            for u in fs:
                markers[u.uid] = _features_task(cfg_d, u, plan.fingerprints[u.uid], str(units_dir / u.filename))
                done.append(u.uid)
                bar.update()
                if on_unit_done:
                    on_unit_done(u, len(done), total)
            for u in ms:
                _metrics_task(cfg_d, u, markers[plan.depends[u.uid]], str(units_dir / u.filename), n_jobs)
                done.append(u.uid)
                bar.update()
                if on_unit_done:
                    on_unit_done(u, len(done), total)
    return done


def _check_model_resource(client) -> None:
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        log.warning("the scheduler has no workers yet; features tasks need workers offering the resource %s=1",
                    MODEL_RESOURCE)
        return
    if not any(w.get("resources", {}).get(MODEL_RESOURCE, 0) >= 1 for w in workers.values()):
        raise ValueError(f"no worker of the scheduler offers the resource {MODEL_RESOURCE}=1, so features tasks "
                         f"could never run; start workers with `dask worker <scheduler> --resources "
                         f"{MODEL_RESOURCE}=1` (dask-jobqueue: worker_extra_args=['--resources', "
                         f"'{MODEL_RESOURCE}=1'])")


def dashboard_link(client, *, local: bool = False) -> str | None:
    """The client's dashboard URL, or None when the scheduler serves none.

    The dashboard pages need ``bokeh`` where the scheduler runs; with ``local=True`` (a LocalCluster of this
    process) its absence here means there is no dashboard.
    """
    import importlib.util

    if local and importlib.util.find_spec("bokeh") is None:
        return None
    try:
        services = client.scheduler_info().get("services", {})
        if "dashboard" not in services:
            return None
        return client.dashboard_link
    except Exception:  # noqa: BLE001 - a missing dashboard is never fatal
        return None


def _run_dask(client, plan, todo_f, todo_m, markers, cfg_d, units_dir, n_jobs, progress, on_unit_done) -> list[str]:
    from dask.distributed import as_completed

    _check_model_resource(client)
    token = uuid.uuid4().hex[:8]
    futures: dict[str, Any] = {}
    unit_of: dict[str, Unit] = {}
    todo_f_by_model = {m: [u for u in todo_f if u.model == m] for m in plan.spec.models}
    todo_m_by_model = {m: [u for u in todo_m if u.model == m] for m in plan.spec.models}
    for model in plan.spec.models:  # submission order = priority: model by model, features first
        for u in todo_f_by_model[model]:
            fut = client.submit(_features_task, cfg_d, u, plan.fingerprints[u.uid], str(units_dir / u.filename),
                                key=f"{u.uid}-{token}", resources={MODEL_RESOURCE: 1}, pure=False)
            futures[u.uid] = fut
            unit_of[fut.key] = u
        for u in todo_m_by_model[model]:
            dep = plan.depends[u.uid]
            marker = futures[dep] if dep in futures else markers[dep]
            fut = client.submit(_metrics_task, cfg_d, u, marker, str(units_dir / u.filename), n_jobs,
                                key=f"{u.uid}-{token}", pure=False)
            futures[u.uid] = fut
            unit_of[fut.key] = u
    done: list[str] = []
    total = len(futures)
    try:
        with tqdm(total=total, desc="sweep units", unit="unit", disable=not progress) as bar:
            for fut in as_completed(list(futures.values())):
                fut.result()  # re-raises a task's exception here
                u = unit_of[fut.key]
                done.append(u.uid)
                bar.update()
                if on_unit_done:
                    on_unit_done(u, len(done), total)
    except BaseException:
        client.cancel(list(futures.values()))
        raise
    return done


def assemble(plan: Plan, units_dir: Path) -> pd.DataFrame:
    """The tidy results table of a finished plan, from its unit files, in the plan's canonical order."""
    from .experiments import group_of
    from .models import get_spec
    from .stats import normalized_depth

    cfg = plan.spec.cfg
    values: dict[str, dict[str, float]] = {}
    for u in plan.metrics:
        v = _read_metrics_file(units_dir / u.filename, u)
        if v is None:
            raise ConvexlibError(f"unit {u.uid} has no result in {units_dir}")
        values[u.uid] = v
    meta = {}
    for m in plan.spec.models:
        s = get_spec(m)
        meta[m] = {"profile": cfg.profile, "model": s.name, "label": s.label or s.name, "family": s.family,
                   "variant": s.variant, "group": group_of(cfg, s), "size": s.size, "n_layers": s.n_layers}
    rows = []
    for slot in plan.slots:
        row = dict(meta[slot.model])
        row.update({"layer": slot.layer, "depth": normalized_depth(slot.layer, row["n_layers"]),
                    "dataset": slot.dataset, "metric": slot.metric, "value": values[slot.unit][slot.metric],
                    "seed": slot.seed, "metric_variant": slot.variant})
        rows.append(row)
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def _to_csv_text(df: pd.DataFrame) -> str:
    """CSV text with round-trip exact floats (``repr``) and ``nan`` for missing values."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(df.columns))
    float_cols = {c for c in df.columns if pd.api.types.is_float_dtype(df[c])}
    for rec in df.itertuples(index=False, name=None):
        w.writerow([_fmt(v) if c in float_cols else v for c, v in zip(df.columns, rec)])
    return buf.getvalue()


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    client: Any = None,
    n_jobs: int | None = None,
    dashboard_address: str = "127.0.0.1:0",
    progress: bool = True,
    on_unit_done: OnUnitDone | None = None,
) -> SweepResult:
    """Run (or resume) a sweep and write ``<sweep_dir>/results.csv``.

    Parameters
    ----------
    spec : SweepSpec (from :func:`make_spec`)
    sweep_dir : folder of the sweep (``sweep.json``, ``units/``, ``results.csv``); created if needed
    workers : run on a new ``LocalCluster`` with this many worker processes (loopback only)
    threads_per_worker : threads of each LocalCluster worker
    scheduler : address of a running Dask scheduler (``tcp://host:8786``)
    client : a connected :class:`dask.distributed.Client` (e.g. on a dask-jobqueue cluster); not closed here
    n_jobs : processes of each convexity computation; default -1 (all cores) in-process, 1 on Dask workers
    dashboard_address : address of a new LocalCluster's dashboard / HTTP server (default ``"127.0.0.1:0"``: a free
        loopback port; ``":0"`` a free port on all interfaces)
    progress : tqdm bar over units; the dashboard link is printed when a cluster serves one
    on_unit_done : called as ``on_unit_done(unit, n_done, n_todo)`` in this process after each unit; an
        exception it raises aborts the sweep (finished units stay on disk)

    Returns
    -------
    SweepResult

    Raises
    ------
    ValueError
        More than one of workers / scheduler / client, a bad worker count, a sweep dir of another sweep, or
        (on a scheduler) no worker offering the resource ``MODEL=1``.
    """
    t0 = time.perf_counter()
    if sum(x is not None for x in (workers, scheduler, client)) > 1:
        raise ValueError("give at most one of workers, scheduler and client")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if isinstance(threads_per_worker, bool) or not isinstance(threads_per_worker, int) or threads_per_worker < 1:
        raise ValueError(f"threads_per_worker must be a positive int, got {threads_per_worker!r}")
    spec = dataclasses.replace(spec, cfg=_resolved_cfg(spec.cfg))
    sweep_dir = Path(sweep_dir).resolve()
    units_dir = sweep_dir / UNITS_DIR
    units_dir.mkdir(parents=True, exist_ok=True)
    _check_sweep_dir(sweep_dir, spec)
    plan = plan_sweep(spec)
    markers, done_m = _scan(plan, units_dir)
    todo_f, todo_m = _metric_units_todo(plan, markers, done_m)
    skipped = [u.uid for u in plan.features if u.uid in markers] + sorted(done_m)
    cfg_d = spec.cfg.as_dict()
    mode = "sequential" if workers is None and scheduler is None and client is None else (
        "local-cluster" if workers is not None else "scheduler")
    if progress:
        print(f"[sweep] {len(plan)} units ({len(plan.features)} features, {len(plan.metrics)} metrics); "
              f"{len(skipped)} finished, {len(todo_f) + len(todo_m)} to run ({mode})", flush=True)
    computed: list[str] = []
    if todo_f or todo_m:
        if mode == "sequential":
            computed = _run_sequential(plan, todo_f, todo_m, markers, cfg_d, units_dir,
                                       -1 if n_jobs is None else n_jobs, progress, on_unit_done)
        else:
            computed = _with_client(workers, threads_per_worker, scheduler, client, dashboard_address, progress,
                                    lambda c: _run_dask(c, plan, todo_f, todo_m, markers, cfg_d, units_dir,
                                                        1 if n_jobs is None else n_jobs, progress, on_unit_done))
    tidy = assemble(plan, units_dir)
    results_path = sweep_dir / RESULTS_FILE
    _atomic_write_text(results_path, _to_csv_text(tidy))
    seconds = time.perf_counter() - t0
    if progress:
        print(f"[sweep] done in {seconds:.1f} s: {len(computed)} units computed, {len(skipped)} reused; "
              f"{len(tidy)} rows in {results_path}", flush=True)
    return SweepResult(sweep_dir, results_path, tidy, len(plan), computed, skipped, seconds, mode)


def _with_client(workers, threads_per_worker, scheduler, client, dashboard_address, progress, fn):
    """Call ``fn(client)`` on the given client, a client of ``scheduler``, or a new LocalCluster."""
    from dask.distributed import Client, LocalCluster

    if client is not None:
        if progress and (link := dashboard_link(client)):
            print(f"[sweep] Dask dashboard: {link}", flush=True)
        return fn(client)
    if scheduler is not None:
        with Client(scheduler) as c:
            if progress:
                link = dashboard_link(c)
                print(f"[sweep] Dask dashboard: {link or 'none'} (its pages need bokeh on the scheduler)", flush=True)
            return fn(c)
    with LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                      resources={MODEL_RESOURCE: 1}, host="127.0.0.1",
                      dashboard_address=dashboard_address or "127.0.0.1:0") as cl, \
            Client(cl) as c:
        if progress:
            link = dashboard_link(c, local=True)
            print(f"[sweep] LocalCluster of {workers} workers; Dask dashboard: "
                  f"{link or 'none (pip install bokeh for the dashboard)'}", flush=True)
        return fn(c)


# --------------------------------------------------------------------------------------------------------------
# reading results
# --------------------------------------------------------------------------------------------------------------


def load_results(path_or_sweep_dir: str | os.PathLike) -> pd.DataFrame:
    """The tidy table of a sweep (``results.csv`` of a sweep dir, or that file itself), with exact floats.

    Raises
    ------
    FileNotFoundError
        No results file; for an unfinished sweep dir the message says how many units are done.
    """
    path = Path(path_or_sweep_dir)
    if path.is_dir():
        csv_path = path / RESULTS_FILE
        if not csv_path.is_file():
            n = len(list((path / UNITS_DIR).glob("*.*"))) if (path / UNITS_DIR).is_dir() else 0
            raise FileNotFoundError(f"{path} has no {RESULTS_FILE} ({n} unit files): the sweep has not finished; "
                                    f"rerun the same sweep command to resume it")
        path = csv_path
    if not path.is_file():
        raise FileNotFoundError(f"no sweep results at {path}")
    df = pd.read_csv(path, keep_default_na=False, na_values={"value": ["nan"], "depth": ["nan"]})
    missing = [c for c in SWEEP_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not a sweep results table: missing columns {missing}")
    return df


def results_for_notebook(
    path_or_sweep_dir: str | os.PathLike,
    *,
    seed: int | None = None,
    metric_variant: str = "euclidean",
    profile: str | None = None,
) -> pd.DataFrame:
    """A sweep's results in the layout of :func:`convexlib.experiments.layerwise` (notebook 01's ``tidy``).

    Parameters
    ----------
    path_or_sweep_dir : a sweep directory or its ``results.csv``
    seed : keep this seed only (e.g. the notebook's ``seed``); None keeps every seed of the sweep
    metric_variant : the variant to return (default the paper's ``"euclidean"``)
    profile : when given, the sweep's profile must be this one

    Returns
    -------
    DataFrame with columns :data:`LAYERWISE_COLUMNS`, rows in the sweep's order (for one seed and the models
    in layerwise's order, the same table as ``E.layerwise(cfg, seed=seed)``).

    Raises
    ------
    ValueError
        The variant or seed is not in the sweep, or the profile differs.
    """
    df = load_results(path_or_sweep_dir)
    if profile is not None:
        got = sorted(df["profile"].unique().tolist())
        if got != [profile]:
            raise ValueError(f"the sweep was run with profile {got}, not {profile!r}")
    variants = list(dict.fromkeys(df["metric_variant"]))
    if metric_variant not in variants:
        raise ValueError(f"metric_variant {metric_variant!r} is not in the sweep; it has {variants}")
    df = df[df["metric_variant"] == metric_variant]
    if seed is not None:
        seeds = sorted(df["seed"].unique().tolist())
        if seed not in seeds:
            raise ValueError(f"seed {seed} is not in the sweep; it has {seeds}")
        df = df[df["seed"] == seed]
    return df[LAYERWISE_COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from .runner import parse_value
    from . import profiles

    ap = argparse.ArgumentParser(prog="python -m convexlib.sweep", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring of convexlib.sweep for a SLURM example.")
    ap.add_argument("--profile", default="offline", help="offline (default), paper or tiny")
    ap.add_argument("--models", nargs="+", help="registry names (default: the profile's models)")
    ap.add_argument("--seeds", nargs="+", type=int, help="seeds (default: seed .. seed + n_seeds - 1)")
    ap.add_argument("--variants", nargs="+", default=["euclidean"],
                    help="euclidean (paper), cosine (App. A.3) or DIST:SIM; default euclidean")
    ap.add_argument("--layers", nargs="+", type=int, help="layers to measure (default all)")
    ap.add_argument("--datasets", nargs="+", help="data sets to keep (default all of the profile)")
    ap.add_argument("--out", required=True, help="sweep directory (created; rerun to resume)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="run on a LocalCluster with this many worker processes")
    where.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786")
    ap.add_argument("--threads-per-worker", type=int, default=1)
    ap.add_argument("--n-jobs", type=int, help="processes per convexity computation (default -1 in-process, 1 on "
                                                "Dask workers)")
    ap.add_argument("--dashboard-address", default="127.0.0.1:0",
                    help="LocalCluster dashboard address (default: a free loopback port)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="a profile parameter (max_paths, n_neighbors, images_per_class, seed, n_seeds, ...)")
    ap.add_argument("--data-root", default="", help="data root (else $CONVEXLIB_DATA)")
    ap.add_argument("--cache-dir", default="", help="cache directory (else $CONVEXLIB_CACHE or .cache)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        params: dict[str, Any] = {}
        for item in args.param:
            if "=" not in item:
                raise ValueError(f"-p expects NAME=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            k = k.strip()
            settable = sorted(set(profiles.PARAMETERS) - {"profile", "data_root", "cache_dir", "device", "models"})
            if k not in settable:
                raise ValueError(f"-p {k}: not a profile parameter settable here; settable: {settable}")
            params[k] = parse_value(v.strip())
        cfg = profiles.resolve(profile=args.profile, data_root=args.data_root, cache_dir=args.cache_dir,
                               device=args.device, models=args.models, **params)
        spec = make_spec(cfg, seeds=args.seeds, variants=args.variants, layers=args.layers, datasets=args.datasets)
        res = run_sweep(spec, args.out, workers=args.workers, scheduler=args.scheduler,
                        threads_per_worker=args.threads_per_worker, n_jobs=args.n_jobs,
                        dashboard_address=args.dashboard_address, progress=not args.no_progress)
        print(f"[sweep] results: {res.results_path}")
        return 0
    except (ValueError, ConvexlibError, FileNotFoundError) as exc:
        print(f"[sweep] error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
