"""Bring your own representations: per-layer convexity, OOOA and their correlation for any model.

A *source* is one model's per-layer representations of one set of items, with a class label per item and,
optionally, human odd-one-out triplets over the items. :func:`byo_layerwise` turns a source into the tidy
per-layer table of :func:`convexlib.experiments.layerwise` (same columns, ``profile="byo"``), so the plotting
and correlation helpers work on it unchanged; :func:`byo_correlation` gives the correlations of
OOOA and convexity (per model across layers, pooled over halves of depth, per layer across models).

File formats
------------
Layers
    A folder with one ``layer_<l>.npy`` per layer (``l = 1..L``: the output of block ``l``; zero padding as in
    ``layer_01.npy`` is fine), or one ``.npz`` file with arrays named ``layer_<l>`` (``np.savez(path,
    layer_1=X1, layer_2=X2, ...)``). Each array is 2-d ``(n_items, d_l)`` of real numbers (stored as they
    are; integers become float64), rows in item order; every layer has the same ``n_items``, the width may differ.
    Layers must be numbered 1..L without gaps (a gap is an error: depth on the figures' x axis is
    ``(l - 1) / (L - 1)``); layer 0 (an embedding output) is not part of the convention and is refused. Other
    ``.npy`` files in the folder are an error; files with other suffixes are ignored.
Labels
    ``.npy`` (1-d, one label per item), or a text table ``.csv`` / ``.tsv`` / ``.txt``: either a table with a
    header holding a column named ``label``, or one label per line without a header. An empty label (an empty
    cell or line, ``None``, NaN) marks an item without a class: it is left out of convexity but still takes part
    in the OOOA. Labels are compared as strings.
Triplets
    ``.npy`` integer array ``(N, 3)``: 0-based row indices into the layer arrays; columns 0 and 1 are the pair a
    person kept together, column 2 the odd one out they chose (the gLocal convention of
    :mod:`convexlib.alignment`). Repeated judgements of the same triplet are rows of their own.

Sources for the notebook (``notebooks/06_your_model.py``) are dicts; see :func:`validate_source`.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from . import experiments as E
from . import stats
from .data.sets import ImageSet, TextSet
from .alignment import check_count
from .cache import open_npz
from .convexity import missing_labels as missing_values

PathLike = str | os.PathLike

__all__ = [
    "LAYER_FILE_PATTERN",
    "MIN_CLASSES",
    "Source",
    "load_layer_arrays",
    "load_labels",
    "load_triplets",
    "missing_labels",
    "labelled_set",
    "image_folder_set",
    "load_texts",
    "validate_source",
    "validate_sources",
    "load_source",
    "byo_layerwise",
    "source_layerwise",
    "paired_wide",
    "byo_correlation",
    "triplet_noise_ceiling",
    "describe_source",
    "source_files",
    "write_worked_example",
]

#: File names of per-layer arrays in a folder: ``layer_<l>.npy`` (l = 1..L).
LAYER_FILE_PATTERN = "layer_<l>.npy"
_LAYER_RE = re.compile(r"^layer_(\d+)$")
#: Convexity needs at least this many classes.
MIN_CLASSES = 2
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_LABEL_TEXT_SUFFIXES = (".csv", ".tsv", ".txt")


# ------------------------------------------------------------------------------------------------------------------
# loaders
# ------------------------------------------------------------------------------------------------------------------


def _show(p: Path) -> str:
    """A path as given, with its absolute form when it is relative (relative paths are read from the cwd)."""
    return str(p) if p.is_absolute() else f"{p} (= {p.absolute()})"


def _check_layer_array(arr: np.ndarray, where: str) -> np.ndarray:
    if arr.ndim != 2:
        raise ValueError(f"{where}: must be a 2-d array (n_items, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{where}: empty array of shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{where}: must hold real numbers, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{where}: {int(bad.sum())} NaN/inf value(s) in {len(rows)} row(s), first at row {int(rows[0])} "
            f"(rows {rows[:5].tolist()}{' ...' if len(rows) > 5 else ''})"
        )
    return arr


def _layer_number(stem: str) -> int | None:
    m = _LAYER_RE.match(stem)
    return int(m.group(1)) if m else None


def _check_numbering(found: dict[int, str], where: str) -> None:
    layers = sorted(found)
    if layers[0] < 1:
        raise ValueError(f"{where}: layers are numbered from 1 (the output of block 1); found {found[layers[0]]!r}. "
                         "Leave the embedding output (layer 0) out or renumber")
    missing = sorted(set(range(1, layers[-1] + 1)) - set(layers))
    if missing:
        raise ValueError(f"{where}: layers must be numbered 1..L without gaps; found {layers}, missing {missing}")


def load_layer_arrays(path: PathLike) -> dict[int, np.ndarray]:
    """Per-layer representations from a folder of ``layer_<l>.npy`` files or one ``.npz`` with keys ``layer_<l>``.

    Parameters
    ----------
    path : folder or ``.npz`` file

    Returns
    -------
    dict layer (1..L, ascending) -> ndarray of shape (n_items, d_l), float (integer arrays become float64)

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        No layer files; ``.npy`` files or ``.npz`` keys not named ``layer_<l>`` (the message lists what was
        found); a layer number given twice (``layer_1`` and ``layer_01``); layer 0 or a gap in 1..L; an array
        that is not 2-d real numbers; row counts that differ between layers; NaN/inf (file and first row named).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"layer representations not found: {_show(p)} (a folder of {LAYER_FILE_PATTERN} files "
                                "or an .npz file)")
    arrays: dict[int, np.ndarray] = {}
    names: dict[int, str] = {}
    if p.is_dir():
        npy = sorted(f for f in p.iterdir() if f.is_file() and f.suffix == ".npy")
        if not npy:
            found = sorted(f.name for f in p.iterdir())[:20]
            raise ValueError(f"{p}: no {LAYER_FILE_PATTERN} files in this folder (found: {found or 'nothing'}); "
                             "for a single .npz file pass its path instead")
        bad = [f.name for f in npy if _layer_number(f.stem) is None]
        if bad:
            raise ValueError(f"{p}: .npy files must be named {LAYER_FILE_PATTERN} (l = 1..L); not understood: "
                             f"{bad}; found: {[f.name for f in npy]}")
        for f in npy:
            layer = _layer_number(f.stem)
            if layer in names:
                raise ValueError(f"{p}: layer {layer} is given twice: {names[layer]} and {f.name}")
            names[layer] = f.name
        _check_numbering(names, str(p))
        for layer in sorted(names):
            f = p / names[layer]
            try:
                arr = np.load(f, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise ValueError(f"{f}: cannot be read as a numeric .npy array ({type(exc).__name__}: {exc})") from None
            arrays[layer] = _check_layer_array(arr, str(f))
    elif p.suffix == ".npz":
        with open_npz(p, "an .npz archive of layers (np.savez(path, layer_1=..., ...))") as npz:
            keys = list(npz.files)
            if not keys:
                raise ValueError(f"{p}: the .npz file holds no arrays")
            bad = [k for k in keys if _layer_number(k) is None]
            if bad:
                raise ValueError(f"{p}: arrays must be named layer_<l> (l = 1..L); not understood: {bad}; "
                                 f"found: {keys}")
            for k in keys:
                layer = _layer_number(k)
                if layer in names:
                    raise ValueError(f"{p}: layer {layer} is given twice: {names[layer]} and {k}")
                names[layer] = k
            _check_numbering(names, str(p))
            for layer in sorted(names):
                try:
                    arr = npz[names[layer]]
                except ValueError as exc:
                    raise ValueError(f"{p}[{names[layer]}]: not a numeric array ({exc})") from exc
                arrays[layer] = _check_layer_array(arr, f"{p}[{names[layer]}]")
    else:
        raise ValueError(f"{p}: layers must be a folder of {LAYER_FILE_PATTERN} files or an .npz file, "
                         f"got a {p.suffix or 'suffix-less'} file")
    rows = {names[layer]: a.shape[0] for layer, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(f"{p}: every layer must have one row per item, but the row counts differ: {rows}")
    return arrays


def missing_labels(labels: Sequence | np.ndarray) -> np.ndarray:
    """Boolean mask of labels that mark "no class": ``None``, NaN, and empty or blank strings."""
    arr = np.asarray(labels, dtype=object)
    blank = np.fromiter((isinstance(v, (str, bytes)) and not v.strip() for v in arr.tolist()), dtype=bool,
                        count=len(arr))
    return missing_values(arr) | blank


def _normalise_labels(raw: np.ndarray, where: str) -> np.ndarray:
    """1-d object array of str labels, None where missing; whole-number floats print without ".0"."""
    if raw.ndim != 1:
        raise ValueError(f"{where}: labels must be 1-d (one per item), got shape {raw.shape}")
    miss = missing_labels(raw)
    out = np.empty(len(raw), dtype=object)
    for i, v in enumerate(raw.tolist()):
        if miss[i]:
            out[i] = None
        elif isinstance(v, float) and v.is_integer():
            out[i] = str(int(v))
        elif isinstance(v, bytes):
            out[i] = v.decode("utf-8").strip()
        else:
            out[i] = str(v).strip()
    return out


def load_labels(path: PathLike, n_items: int | None = None) -> np.ndarray:
    """Class labels, one per item, from ``.npy`` or a ``.csv`` / ``.tsv`` / ``.txt`` file.

    A text file whose first line has a column named ``label`` (comma-separated for ``.csv``, tab-separated for
    ``.tsv``/``.txt``) is read as a table and that column is used; otherwise every line is one label (no header).
    Empty cells / lines, ``None`` and NaN mean "no class".

    Parameters
    ----------
    path : file
    n_items : int, optional
        Number of items (rows of the layer arrays); the labels must match it.

    Returns
    -------
    ndarray of shape (n_items,), dtype object: ``str`` labels, ``None`` where missing
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"labels file not found: {_show(p)}")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            raw = np.load(p, allow_pickle=False)
        except ValueError as exc:  # an object array: loading it would unpickle, which can run arbitrary code
            raise ValueError(
                f"{p}: holds Python objects (a pickled object array), which are not loaded because unpickling "
                "can run code; save the labels as strings, '' for no class "
                "(np.save(path, np.array(['' if v is None else str(v) for v in labels]))), or as a CSV "
                f"with a 'label' column ({exc})") from None
        except (OSError, EOFError) as exc:
            raise ValueError(f"{p}: cannot be read as an .npy file ({type(exc).__name__}: {exc})") from None
        raw = np.asarray(raw)
        if raw.ndim == 2 and 1 in raw.shape:
            raw = raw.ravel()
    elif suffix in _LABEL_TEXT_SUFFIXES:
        text = p.read_text(encoding="utf-8-sig")
        lines = text.splitlines()
        if not lines:
            raise ValueError(f"{p}: the labels file is empty")
        sep = "," if suffix == ".csv" else "\t"
        header = [c.strip().strip('"') for c in lines[0].split(sep)]
        if "label" in header:
            df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
            raw = df["label"].to_numpy(dtype=object)
        elif len(header) > 1:
            raise ValueError(f"{p}: a table of labels needs a column named 'label' (found columns {header}); "
                             "or give one label per line without a header")
        else:
            raw = np.asarray(lines, dtype=object)
    else:
        raise ValueError(f"{p}: labels must be .npy, .csv, .tsv or .txt, got {p.suffix or 'no suffix'}")
    labels = _normalise_labels(raw, str(p))
    if n_items is not None and len(labels) != n_items:
        hint = ""
        if len(labels) == n_items + 1 and labels[-1] is None:
            hint = " (the last line is empty: an empty line is an item without a label)"
        raise ValueError(f"{p}: {len(labels)} labels for {n_items} items (rows of the layer arrays){hint}; "
                         "give exactly one label per item (an empty one for an item without a class)")
    return labels


def load_triplets(path: PathLike, n_items: int) -> np.ndarray:
    """Human odd-one-out triplets from an ``.npy`` file: int ``(N, 3)``, 0-based, column 2 the odd one out.

    Returns
    -------
    ndarray of shape (N, 3), int64 (validated with :func:`convexlib.alignment.validate_triplets`)
    """
    from .alignment import validate_triplets

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"triplets file not found: {_show(p)}")
    if p.suffix.lower() != ".npy":
        raise ValueError(f"{p}: triplets must be an .npy file holding an int (N, 3) array (np.save), "
                         f"got {p.suffix or 'no suffix'}")
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{p}: cannot be read as a numeric .npy array ({type(exc).__name__}: {exc})") from None
    return validate_triplets(arr, n_items, name=f"triplets in {p}")


# ------------------------------------------------------------------------------------------------------------------
# the per-layer table
# ------------------------------------------------------------------------------------------------------------------


def labelled_set(
    labels: Sequence | np.ndarray,
    *,
    min_class_size: int = 10,
    rows: Sequence[int] | np.ndarray | None = None,
    name: str = "labels",
) -> E.LabelledSet:
    """The items whose class regions are measured: labelled rows, classes of at least ``min_class_size``.

    Parameters
    ----------
    labels : sequence of length n_items (``None`` / NaN / ``""`` = no class)
    min_class_size : int
        Classes with fewer labelled items are dropped (listed in ``LabelledSet.dropped``).
    rows : int indices, optional
        Restrict to these rows (rows without a label are still left out).
    name : str
        Name of the convexity set (the ``dataset`` column).

    Returns
    -------
    LabelledSet with ``rows`` (ascending), ``labels`` (str) and ``dropped`` (class -> size); its ``items`` is a
    placeholder :class:`TextSet` of row names (the features are given directly).
    """
    min_class_size = check_count(min_class_size, "min_class_size", 2)
    lab = _normalise_labels(np.asarray(labels, dtype=object), "labels")
    n = len(lab)
    keep = ~missing_labels(lab)
    if rows is not None:
        r = np.asarray(rows)
        if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
            raise ValueError(f"convexity_rows must be a 1-d array of integer row indices, got {r.dtype} {r.shape}")
        if r.size and (r.min() < 0 or r.max() >= n):
            raise ValueError(f"convexity_rows must lie in 0..{n - 1}, got values in {r.min()}..{r.max()}")
        if len(np.unique(r)) != len(r):
            raise ValueError("convexity_rows repeats a row")
        sel = np.zeros(n, dtype=bool)
        sel[r] = True
        keep &= sel
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        raise ValueError("no labelled items: every label is empty (None/NaN/'')")
    items = TextSet(tuple(f"row {i}" for i in range(n)), name=f"{name}-rows")
    return E._labelled(name, items, lab[idx].astype(str), idx, int(min_class_size))


def _tidy_row(meta: Mapping[str, Any], layer: int, dataset: str, metric: str, value: float, seed: int) -> dict:
    n_layers = int(meta["n_layers"])
    return {
        "profile": "byo", "model": meta["model"], "label": meta["label"], "family": meta["family"],
        "variant": meta["variant"], "group": meta["group"], "size": meta["size"], "n_layers": n_layers,
        "layer": int(layer), "depth": stats.normalized_depth(int(layer), n_layers), "dataset": dataset,
        "metric": metric, "value": float(value), "seed": int(seed),
    }


def byo_layerwise(
    layers: Mapping[int, np.ndarray],
    labels: Sequence | np.ndarray,
    triplets: np.ndarray | None = None,
    *,
    name: str = "my-model",
    label: str | None = None,
    family: str = "byo",
    variant: str = "byo",
    size: str = "unknown",
    dataset: str = "labels",
    triplet_set: str = "triplets",
    convexity_rows: Sequence[int] | np.ndarray | None = None,
    min_class_size: int = 10,
    n_neighbors: int = 10,
    max_paths: int = 5000,
    seed: int = 42,
    baseline: bool = True,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Per-layer graph convexity (and OOOA when triplets are given) of one model's representations.

    The same computation as :func:`convexlib.experiments.layerwise` (convexity via
    :func:`~convexlib.experiments.convexity_per_layer`, cached on the features' checksum; OOOA via
    :func:`~convexlib.experiments.oooa_per_layer`: per-dimension centring + cosine, ties wrong), on arrays you give.

    Parameters
    ----------
    layers : dict layer (1..L, no gaps) -> ndarray of shape (n_items, d_l)
    labels : sequence of length n_items
        Class of each item; ``None`` / NaN / ``""`` leave an item out of convexity (not of OOOA).
    triplets : ndarray of shape (N, 3), int, optional
        0-based item indices, column 2 the human odd one out. None: no OOOA rows.
    name : the ``model`` column; ``label`` (default ``name``) the figure legend.
    family, variant, size : descriptive columns; ``group`` is always ``"byo"``.
    dataset, triplet_set : names of the convexity set and the triplet set (the ``dataset`` column).
    convexity_rows : int indices, optional
        Restrict convexity to these rows.
    min_class_size : int
        Classes with fewer labelled items are dropped (see :func:`labelled_set` to list them).
    n_neighbors, max_paths, seed, baseline : as in :func:`convexlib.convexity.graph_convexity`.
    cache_dir : path, optional
        Cache of convexity results (default :func:`convexlib.paths.cache_dir`).

    Returns
    -------
    DataFrame with the columns of :func:`convexlib.experiments.layerwise` (``profile="byo"``) and metrics
    ``convexity``, ``convexity_sem``, ``convexity_baseline`` (percent; NaN without ``baseline``) per layer, then
    ``oooa`` (percent) per layer when triplets are given.

    Raises
    ------
    ValueError
        Bad layer numbering or arrays, labels of the wrong length, fewer than 2 classes left, bad triplets.
    """
    from . import profiles
    from .data.triplets import Triplets

    if not layers:
        raise ValueError("layers is empty")
    feats: dict[int, np.ndarray] = {}
    for layer in sorted(layers):
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise ValueError(f"layer keys must be ints 1..L, got {layer!r}")
        feats[int(layer)] = _check_layer_array(np.asarray(layers[layer]), f"layer {layer}")
    _check_numbering({k: f"layer {k}" for k in feats}, name)
    n_rows = {k: a.shape[0] for k, a in feats.items()}
    if len(set(n_rows.values())) > 1:
        raise ValueError(f"{name}: every layer must have one row per item, but the row counts differ: {n_rows}")
    n = next(iter(n_rows.values()))
    lab = np.asarray(labels, dtype=object)
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"{name}: {len(lab) if lab.ndim == 1 else lab.shape} labels for {n} items; give one per item")
    lset = labelled_set(lab, min_class_size=min_class_size, rows=convexity_rows, name=dataset)
    kept = lset.class_sizes()
    if len(kept) < MIN_CLASSES:
        raise ValueError(
            f"{name}: convexity needs at least {MIN_CLASSES} classes with >= {min_class_size} labelled items; "
            f"{len(kept)} left ({kept}); dropped as too small: {lset.dropped or 'none'}"
        )
    cfg = profiles.resolve(
        "offline", cache_dir="" if cache_dir is None else str(cache_dir), seed=int(seed), n_neighbors=n_neighbors,
        max_paths=max_paths, min_class_size=int(min_class_size), models=["minilm"],
    )
    meta = {"model": name, "label": label or name, "family": family, "variant": variant, "group": "byo",
            "size": size, "n_layers": max(feats)}
    rows = []
    per = E.convexity_per_layer(feats, lset, cfg, seed=int(seed), baseline=baseline, progress=progress)
    for layer, vals in per.items():
        for m in ("convexity", "convexity_sem", "convexity_baseline"):
            rows.append(_tidy_row(meta, layer, dataset, m, vals[m], seed))
    if triplets is not None:
        trip = Triplets(np.asarray(triplets), n, source=triplet_set)
        tset = E.TripletSet(triplet_set, lset.items, trip)
        for layer, v in E.oooa_per_layer(feats, tset).items():
            rows.append(_tidy_row(meta, layer, triplet_set, "oooa", v, seed))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------------------
# sources (the notebook's ``sources`` parameter)
# ------------------------------------------------------------------------------------------------------------------

_LAYER_KEYS = {"layers", "labels", "triplets", "name", "dataset"}
_MODEL_KEYS = {"model", "images", "texts", "labels", "triplets", "max_per_class", "name", "dataset"}


@dataclass(frozen=True)
class Source:
    """One model's per-layer representations, labels and optional triplets, ready for :func:`byo_layerwise`."""

    name: str
    layers: dict[int, np.ndarray]
    labels: np.ndarray
    triplets: np.ndarray | None
    dataset: str
    triplet_set: str | None
    family: str = "byo"
    variant: str = "byo"
    size: str = "unknown"
    origin: dict = field(default_factory=dict, compare=False)

    @property
    def n_items(self) -> int:
        return next(iter(self.layers.values())).shape[0]

    @property
    def n_layers(self) -> int:
        return max(self.layers)


def validate_source(source: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """Check one source dict and return it with defaults filled in (no file is read).

    Two kinds:

    * representations you computed: ``{"layers": <folder of layer_<l>.npy, or .npz>, "labels": <file>,
      "triplets": <.npy or "">, "name": <str>, "dataset": <str>}`` (``triplets``, ``name`` — default the folder
      or file name —, and ``dataset`` — default the labels file name — are optional);
    * a registry model (:mod:`convexlib.models`) run on your items: ``{"model": <name>, "images": <folder with
      one sub-folder per class>, "max_per_class": <int, optional>}`` (labels are the sub-folder names) or
      ``{"model": <name>, "texts": <file, one text per line>, "labels": <file>}``; ``triplets``, ``name`` and
      ``dataset`` as above. Triplets index the items in order (images: classes sorted by name, then files sorted by
      name), so they cannot be combined with ``max_per_class``.

    Raises
    ------
    ValueError
        Not a dict, unknown or missing keys, both or neither of ``layers`` / ``model``, wrong value types.
    """
    where = f"sources[{index}]"
    if not isinstance(source, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(source).__name__} {source!r}")
    s = dict(source)
    if ("layers" in s) == ("model" in s):
        raise ValueError(f"{where} must have exactly one of 'layers' (your own per-layer arrays) or 'model' (a "
                         f"registry model run on your items); got keys {sorted(s)}")
    allowed = _LAYER_KEYS if "layers" in s else _MODEL_KEYS
    unknown = sorted(set(s) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed with "
                         f"'{'layers' if 'layers' in s else 'model'}': {sorted(allowed)}")
    for k in ("layers", "labels", "triplets", "name", "dataset", "model", "images", "texts"):
        if k in s and not isinstance(s[k], str):
            raise ValueError(f"{where}: {k!r} must be a string, got {type(s[k]).__name__} {s[k]!r}")
    if "name" in s and not s["name"].strip():
        raise ValueError(f"{where}: 'name' must not be empty")
    s.setdefault("triplets", "")
    if "layers" in s:
        if not s.get("labels"):
            raise ValueError(f"{where}: 'labels' (a file with one label per item) is required with 'layers'")
        s.setdefault("name", Path(s["layers"].rstrip("/\\")).stem or "my-model")
    else:
        if ("images" in s) == ("texts" in s):
            raise ValueError(f"{where}: a 'model' source needs exactly one of 'images' (a folder with one "
                             "sub-folder per class) or 'texts' (a file with one text per line)")
        if "images" in s:
            if "labels" in s:
                raise ValueError(f"{where}: 'labels' is not used with 'images' (the labels are the sub-folder "
                                 "names); remove it")
            mpc = s.get("max_per_class")
            if mpc is not None and (isinstance(mpc, bool) or not isinstance(mpc, int) or mpc < 1):
                raise ValueError(f"{where}: 'max_per_class' must be a positive int, got {mpc!r}")
            if mpc is not None and s["triplets"]:
                raise ValueError(f"{where}: 'triplets' index all images in order and cannot be combined with "
                                 "'max_per_class'")
        else:
            if "max_per_class" in s:
                raise ValueError(f"{where}: 'max_per_class' applies to 'images' only")
            if not s.get("labels"):
                raise ValueError(f"{where}: 'labels' (one per text) is required with 'texts'")
        s.setdefault("name", s["model"])
    return s


def validate_sources(sources: Any) -> list[dict[str, Any]]:
    """Check the notebook's ``sources`` list: a list of source dicts (:func:`validate_source`) with distinct names."""
    if not isinstance(sources, (list, tuple)):
        raise ValueError(f"sources must be a list of dicts, got {type(sources).__name__} {sources!r}")
    out = [validate_source(s, i) for i, s in enumerate(sources)]
    names = [s["name"] for s in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"sources: names must be distinct (each source is one model in the tables), repeated: "
                         f"{dup}; set 'name' in each source")
    return out


def image_folder_set(folder: PathLike, max_per_class: int | None = None, seed: int = 42) -> ImageSet:
    """Images in one sub-folder per class (``<folder>/<class>/<image>``), labelled by the sub-folder name.

    Classes are sorted by name, files within a class by name; with ``max_per_class`` a seeded random subset of
    each larger class is kept (in file-name order).
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {_show(root)}")
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{root}: no class sub-folders; put the images of each class in <folder>/<class>/")
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    labels: list[str] = []
    empty = []
    for d in classes:
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            empty.append(d.name)
            continue
        if max_per_class is not None and len(files) > max_per_class:
            files = [files[i] for i in np.sort(rng.choice(len(files), size=max_per_class, replace=False))]
        paths.extend(files)
        labels.extend([d.name] * len(files))
    if not paths:
        raise ValueError(f"{root}: no image files ({', '.join(_IMAGE_SUFFIXES)}) in the class sub-folders")
    return ImageSet(tuple(paths), np.asarray(labels), name=f"{root.name}" + (f"-{max_per_class}" if max_per_class
                                                                                 else ""),
                    meta={"source": str(root), "max_per_class": max_per_class, "seed": seed,
                          "empty_classes": empty})


def load_texts(path: PathLike) -> TextSet:
    """Texts from a UTF-8 file, one per line (empty lines are an error)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"texts file not found: {_show(p)}")
    lines = p.read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        raise ValueError(f"{p}: the texts file is empty")
    blank = [i + 1 for i, t in enumerate(lines) if not t.strip()]
    if blank:
        raise ValueError(f"{p}: {len(blank)} empty line(s), first at line {blank[0]}; give one text per line")
    return TextSet(tuple(lines), name=p.stem, meta={"source": str(p)})


def load_source(
    source: Mapping[str, Any],
    *,
    index: int = 0,
    seed: int = 42,
    batch_size: int = 32,
    device: str = "auto",
    cache_dir: PathLike | None = None,
    progress: bool = True,
) -> Source:
    """Read (or, for a registry model, extract) one source; see :func:`validate_source` for the dict keys.

    Registry models are run through :func:`convexlib.features.extract` (cached under ``cache_dir``).
    """
    s = validate_source(source, index)
    if "layers" in s:
        layers = load_layer_arrays(s["layers"])
        n = next(iter(layers.values())).shape[0]
        labels = load_labels(s["labels"], n)
        dataset = s.get("dataset") or Path(s["labels"]).stem
        meta: dict[str, str] = {}
    else:
        from .features import extract
        from .models import get_spec

        try:
            spec = get_spec(s["model"])
        except KeyError as exc:
            raise ValueError(f"sources[{index}]: {exc.args[0]}") from None
        if "images" in s:
            items: ImageSet | TextSet = image_folder_set(s["images"], s.get("max_per_class"), seed)
            labels = _normalise_labels(np.asarray(items.labels, dtype=object), s["images"])
            dataset = s.get("dataset") or Path(s["images"].rstrip("/\\")).name
        else:
            items = load_texts(s["texts"])
            labels = load_labels(s["labels"], len(items))
            dataset = s.get("dataset") or Path(s["labels"]).stem
        if (spec.modality == "text") != isinstance(items, TextSet):
            raise ValueError(f"sources[{index}]: {spec.name} is a {spec.modality} model; give "
                             f"{'texts' if spec.modality == 'text' else 'images'}")
        layers = extract(spec, items, batch_size=batch_size, device=device, cache_dir=cache_dir, progress=progress)
        n = len(items)
        meta = {"family": spec.family or "byo", "variant": spec.variant or "byo", "size": spec.size or "unknown"}
    triplets = load_triplets(s["triplets"], n) if s["triplets"] else None
    return Source(
        name=s["name"], layers=dict(layers), labels=labels, triplets=triplets, dataset=dataset,
        triplet_set=Path(s["triplets"]).stem if s["triplets"] else None, origin=s, **meta,
    )


def source_layerwise(
    src: Source,
    *,
    min_class_size: int = 10,
    n_neighbors: int = 10,
    max_paths: int = 5000,
    seed: int = 42,
    baseline: bool = True,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """:func:`byo_layerwise` of a loaded :class:`Source`."""
    return byo_layerwise(
        src.layers, src.labels, src.triplets, name=src.name, family=src.family, variant=src.variant,
        size=src.size, dataset=src.dataset, triplet_set=src.triplet_set or "triplets", min_class_size=min_class_size,
        n_neighbors=n_neighbors, max_paths=max_paths, seed=seed, baseline=baseline, cache_dir=cache_dir,
        progress=progress,
    )


def describe_source(src: Source, min_class_size: int = 10) -> str:
    """A few lines on what a source holds and which items/classes enter convexity."""
    lset = labelled_set(src.labels, min_class_size=min_class_size, name=src.dataset)
    n_missing = int(missing_labels(src.labels).sum())
    widths = sorted({a.shape[1] for a in src.layers.values()})
    lines = [
        f"{src.name}: {src.n_items} items, {src.n_layers} layers (width {widths[0] if len(widths) == 1 else widths})",
        f"  convexity set {src.dataset!r}: {len(lset.rows)} items in {len(lset.class_sizes())} classes; "
        f"{n_missing} item(s) without a label left out; classes dropped (< {min_class_size} items): "
        f"{lset.dropped or 'none'}",
        f"  class sizes: {lset.class_sizes()}",
        f"  OOOA: {len(src.triplets)} triplets ({src.triplet_set})" if src.triplets is not None
        else "  OOOA: no triplets given, skipped",
    ]
    return "\n".join(lines)


def source_files(sources: Iterable[Mapping[str, Any]]) -> list[str]:
    """The data files named by source dicts (layer arrays, labels, triplets, texts), for the output manifest.

    Paths are relative to the working directory (so that two ``layer_1.npy`` of different folders stay apart).
    """
    return [os.path.relpath(f) for f in _source_files(sources)]


def _source_files(sources: Iterable[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for s in sources:
        for k in ("labels", "triplets", "texts"):
            if s.get(k):
                out.append(str(s[k]))
        if s.get("layers"):
            p = Path(s["layers"])
            if p.is_dir():
                out.extend(str(f) for f in sorted(p.glob("layer_*.npy")))
            else:
                out.append(str(p))
    return out


# ------------------------------------------------------------------------------------------------------------------
# correlation
# ------------------------------------------------------------------------------------------------------------------

_CORR_COLUMNS = ["kind", "model", "half", "position", "depth", "n", "r", "ci_low", "ci_high", "computable", "reason"]


def _corr_row(kind: str, c: stats.Correlation | None, reason: str = "", **kw) -> dict:
    row = {"kind": kind, "model": "", "half": "", "position": None, "depth": None, "n": 0, "r": None,
           "ci_low": None, "ci_high": None, "computable": False, "reason": reason}
    row.update(kw)
    if c is not None:
        row.update(n=c.n, r=c.r, ci_low=c.ci_low, ci_high=c.ci_high, computable=c.computable,
                   reason=c.reason or "")
    return row


def paired_wide(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, layer) with both ``convexity`` and ``oooa`` (layers of models without triplets are left
    out); the input of the correlation helpers and of :func:`convexlib.plotting.fig_a1`."""
    wide = E.primary_wide(tidy)
    if "oooa" not in wide:
        wide["oooa"] = np.nan
    return wide.dropna(subset=["convexity", "oooa"]).reset_index(drop=True)


def byo_correlation(tidy: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Pearson R between OOOA and convexity: per model across layers, pooled halves, per layer across models.

    Uses each model's convexity set and its OOOA (the layers where both exist). Per-layer R needs at least
    three models whose layer counts are multiples of the shallowest one's (base ``l`` <-> ``f * l``, as in
    :func:`convexlib.stats.per_layer_correlation`); anything that cannot be computed is a row with
    ``computable=False`` and the reason, never a number.

    Returns
    -------
    DataFrame with columns ``kind`` ("per model", "pooled half", "per layer"), ``model``, ``half``, ``position``,
    ``depth``, ``n``, ``r``, ``ci_low``, ``ci_high``, ``computable``, ``reason``.
    """
    models = list(dict.fromkeys(tidy["model"].tolist()))
    both = paired_wide(tidy)
    no_oooa = "no OOOA (no triplets given)"
    rows = []
    for m in models:
        g = both[both["model"] == m].sort_values("layer")
        if g.empty:
            rows.append(_corr_row("per model", None, no_oooa, model=m))
        else:
            c = stats.pearson(g["oooa"], g["convexity"], n_boot=n_boot, seed=seed)
            rows.append(_corr_row("per model", c, model=m))
    if both.empty:
        for half in ("first", "second"):
            rows.append(_corr_row("pooled half", None, no_oooa, half=half, model="all"))
        rows.append(_corr_row("per layer", None, no_oooa, model="all"))
        return pd.DataFrame(rows, columns=_CORR_COLUMNS)
    for half, c in stats.pooled_half_correlation(both, n_boot=n_boot, seed=seed).items():
        rows.append(_corr_row("pooled half", c, half=half, model="all"))
    depths = both.drop_duplicates("model")["n_layers"].astype(int)
    base = int(depths.min())
    if (depths % base).any():
        rows.append(_corr_row("per layer", None, model="all", reason=(
            f"layer counts {sorted(set(depths.tolist()))} are not all multiples of the shallowest model's {base}")))
    else:
        for _, r in stats.per_layer_correlation(both, n_boot=n_boot, seed=seed).iterrows():
            rows.append(_corr_row("per layer", None, model="all", position=int(r["position"]),
                                  depth=float(r["depth"]), n=int(r["n_models"]), r=r["r"], ci_low=r["ci_low"],
                                  ci_high=r["ci_high"], computable=bool(r["computable"]), reason=r["reason"]))
    return pd.DataFrame(rows, columns=_CORR_COLUMNS)


def triplet_noise_ceiling(triplets: np.ndarray) -> float | None:
    """Noise ceiling (percent) of triplets in which most are judged at least twice; None otherwise."""
    from .alignment import noise_ceiling

    nc = noise_ceiling(triplets)
    if nc.n_judgements < 2 * nc.n_triplets:
        return None
    return 100 * nc.majority


# ------------------------------------------------------------------------------------------------------------------
# the worked example
# ------------------------------------------------------------------------------------------------------------------


def _atomic_save(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_layers(folder: Path, layers: Mapping[int, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("layer_*.npy"):
        if _layer_number(old.stem) not in layers:
            old.unlink()
    for layer, X in layers.items():
        _atomic_save(folder / f"layer_{layer}.npy", lambda fh, X=X: np.save(fh, X))


def _save_text(path: Path, lines: Sequence[str]) -> None:
    _atomic_save(path, lambda fh: fh.write(("\n".join(lines) + "\n").encode("utf-8")))


def write_worked_example(
    profile: str,
    *,
    data_root: PathLike | None = None,
    cache_dir: PathLike | None = None,
    device: str = "auto",
    batch_size: int = 32,
    seed: int = 42,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Export files in the user formats from offline data and return the source dicts that read them.

    ``tiny`` profile: 12 CIFAR-10 test images per class; the tiny random ViT's layers as ``layer_<l>.npy`` files
    with a ``.txt`` label file (no triplets), plus the tiny random BEiT as a registry-model source on the same
    image folder. Other profiles: MiniLM-L6 on the 1,854 THINGS concepts (``"{Word}: {definition}"``) as
    ``layer_<l>.npy`` files, the 27 superclasses as a ``.csv`` with a ``label`` column (concepts in no or
    several superclasses have an empty label) and the 20,000 human triplets as ``.npy``; MiniLM as a registry
    model on a text file of the concept names only; and a 16-d random Gaussian projection of the first source's
    layers as one ``.npz``. Files go to ``<cache_dir>/byo_example/`` (features come from the feature cache).
    """
    from . import data as D
    from .features import extract, things_texts
    from .paths import cache_dir as _cache_dir
    from .paths import data_root as _data_root

    base = _cache_dir(None if cache_dir in (None, "") else cache_dir) / "byo_example"
    root = _data_root(None if data_root in (None, "") else data_root)
    kw = dict(batch_size=batch_size, device=device, cache_dir=cache_dir or None, progress=progress)
    if profile == "tiny":
        folder = root / "cifar10" / "test"
        images = image_folder_set(folder, 12, seed)
        _save_layers(base / "tiny" / "tiny-vit", extract("tiny-vit", images, **kw))
        _save_text(base / "tiny" / "cifar10_labels.txt", [str(x) for x in images.labels])
        return [
            {"layers": str(base / "tiny" / "tiny-vit"), "labels": str(base / "tiny" / "cifar10_labels.txt"),
             "name": "tiny-vit (files)", "dataset": "cifar10"},
            {"model": "tiny-beit", "images": str(folder), "max_per_class": 12, "name": "tiny-beit (registry)",
             "dataset": "cifar10"},
        ]
    concepts = D.load_concepts(root)
    texts = things_texts(concepts)
    feats = extract("minilm", texts, **kw)
    _save_layers(base / "minilm", feats)
    sup = D.superclass_labels(root)
    table = pd.DataFrame({"concept": concepts["Word"].astype(str), "label": sup.fillna("").astype(str)})
    _atomic_save(base / "things_superclasses.csv", lambda fh: fh.write(table.to_csv(index=False).encode("utf-8")))
    trip = D.load_human_test_triplets(root).array
    _atomic_save(base / "things_human_triplets.npy", lambda fh: np.save(fh, np.ascontiguousarray(trip)))
    _save_text(base / "things_words.txt", list(things_texts(concepts, mode="word").texts))
    rng = np.random.default_rng([seed, 16])
    d = next(iter(feats.values())).shape[1]
    P = (rng.standard_normal((d, 16)) / np.sqrt(16)).astype(np.float32)
    proj = {f"layer_{layer}": X @ P for layer, X in feats.items()}
    _atomic_save(base / "minilm_proj16.npz", lambda fh: np.savez(fh, **proj))
    common = {"labels": str(base / "things_superclasses.csv"), "triplets": str(base / "things_human_triplets.npy")}
    return [
        {"layers": str(base / "minilm"), "name": "minilm (files)", **common},
        {"model": "minilm", "texts": str(base / "things_words.txt"), "name": "minilm on words (registry)", **common},
        {"layers": str(base / "minilm_proj16.npz"), "name": "minilm 16-d projection (.npz)", **common},
    ]
