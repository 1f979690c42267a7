"""THINGS concepts, their order, the 27 high-level categories ("superclasses") and the VICE embedding.

THINGS order
    The row order of ``thingsvision/things_concepts.tsv`` (index 0 = aardvark ... 1853 = zucchini). Every array
    this package returns that is indexed by concept uses it.
Raw order
    The MTurk/SPoSE object order of the 2020 triplet files and of the VICE embedding. It differs from THINGS
    order for 21 objects; ``vice/sortindex.txt`` maps one to the other (``things = raw[sortindex]``).

Superclasses
    One function, :func:`superclass_labels`, gives every concept at most one of the 27 category names; every
    notebook uses it. ``source`` picks the membership table, ``policy`` what happens to concepts in several
    categories:

    ``source="bottom_up"`` (default, the paper's "determined by human crowd-sourcing")
        The column "Bottom-up Category (Human Raters)" of ``things_concepts.tsv``; comma-separated names.
        926 concepts carry a category, 34 of them more than one.
    ``source="manual"``
        The 1854x27 0/1 matrix ``vice/category_mat_manual.tsv`` (1295 concepts, 303 in several categories).
    ``policy="exclude"`` (default)
        Concepts in exactly one category keep it; concepts in several or none get no label. With the bottom-up
        source this keeps all 27 classes over 892 concepts.
    ``policy="most_specific"``
        Concepts in several categories get the *smallest* of them, counted as the number of concepts the
        source puts in each category (e.g. "animal, bird" -> bird, 27 < 95). A tie would go to the name first
        in :data:`SUPERCLASSES` order (no tie occurs in either source). Concepts in no category get no label.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import pandas as pd

from ..paths import data_file
from . import layout

SuperclassSource = Literal["bottom_up", "manual"]
SuperclassPolicy = Literal["exclude", "most_specific"]

#: The 27 THINGS high-level categories, in alphabetical order (the column order of category_mat_manual.tsv).
SUPERCLASSES: tuple[str, ...] = (
    "animal", "bird", "body part", "clothing", "clothing accessory", "container", "dessert", "drink",
    "electronic device", "food", "fruit", "furniture", "home decor", "insect", "kitchen appliance",
    "kitchen tool", "medical equipment", "musical instrument", "office supply", "part of car", "plant",
    "sports equipment", "tool", "toy", "vegetable", "vehicle", "weapon",
)  # fmt: skip

BOTTOM_UP_COLUMN = "Bottom-up Category (Human Raters)"

_CONCEPT_COLUMNS = {
    "Word": "Word",
    "uniqueID": "uniqueID",
    "WordNet ID": "wordnet_id",
    "Definition (from WordNet, Google, or Wikipedia)": "definition",
    BOTTOM_UP_COLUMN: "bottom_up",
    "Top-down Category (manual selection)": "top_down_manual",
    "Top-down Category (WordNet)": "top_down_wordnet",
    "All Bottom-up Categories": "all_bottom_up",
}

PathLike = str | os.PathLike


def _read_concept_table(root: PathLike | None) -> tuple[pd.DataFrame, str]:
    path = data_file(layout.THINGS_CONCEPTS, root)
    # keep_default_na=False: concept names and empty category cells must stay strings, never NaN
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in _CONCEPT_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; is this the THINGS concept table?")
    if len(raw) != layout.N_THINGS:
        raise ValueError(f"{path}: expected {layout.N_THINGS} concept rows, found {len(raw)}")
    dup = raw["uniqueID"][raw["uniqueID"].duplicated()]
    if len(dup):
        raise ValueError(f"{path}: uniqueID is not unique, first repeat at row {int(dup.index[0]) + 2}: {dup.iloc[0]!r}")
    return raw, str(path)


def load_concepts(root: PathLike | None = None) -> pd.DataFrame:
    """The 1,854 THINGS concepts in THINGS order.

    Parameters
    ----------
    root : path, optional
        Data root (default ``$CONVEXLIB_DATA``, see :func:`convexlib.paths.data_root`).

    Returns
    -------
    DataFrame with 1854 rows and columns
        ``index`` (0..1853, the THINGS index), ``Word``, ``uniqueID`` (also the THINGS image-folder name),
        ``wordnet_id``, ``definition``, and the raw category text columns ``bottom_up``, ``top_down_manual``,
        ``top_down_wordnet``, ``all_bottom_up``. The frame index equals ``index``.
    """
    raw, _ = _read_concept_table(root)
    df = raw[list(_CONCEPT_COLUMNS)].rename(columns=_CONCEPT_COLUMNS)
    df.insert(0, "index", np.arange(len(df), dtype=np.int64))
    df.index = pd.RangeIndex(len(df))
    return df


def _bottom_up_membership(root: PathLike | None) -> pd.DataFrame:
    raw, path = _read_concept_table(root)
    member = np.zeros((len(raw), len(SUPERCLASSES)), dtype=bool)
    col = {name: j for j, name in enumerate(SUPERCLASSES)}
    for i, cell in enumerate(raw[BOTTOM_UP_COLUMN]):
        for name in (part.strip() for part in cell.split(",")):
            if not name:
                continue
            if name not in col:
                raise ValueError(
                    f"{path}: row {i + 2} ({raw['uniqueID'].iloc[i]}): unknown category {name!r} in "
                    f"{BOTTOM_UP_COLUMN!r}; expected one of the 27 SUPERCLASSES"
                )
            member[i, col[name]] = True
    return pd.DataFrame(member, columns=list(SUPERCLASSES))


def _manual_membership(root: PathLike | None) -> pd.DataFrame:
    path = data_file(layout.CATEGORY_MAT_MANUAL, root)
    mat = pd.read_csv(path, sep="\t")
    if tuple(mat.columns) != SUPERCLASSES:
        raise ValueError(f"{path}: header {list(mat.columns)} is not the 27 SUPERCLASSES in alphabetical order")
    if len(mat) != layout.N_THINGS:
        raise ValueError(f"{path}: expected {layout.N_THINGS} rows, found {len(mat)}")
    values = mat.to_numpy()
    bad = np.nonzero(~np.isin(values, (0, 1)).all(axis=1))[0]
    if len(bad):
        raise ValueError(f"{path}: row {int(bad[0]) + 2} holds values other than 0/1: {values[bad[0]].tolist()}")
    return pd.DataFrame(values.astype(bool), columns=list(SUPERCLASSES))


def superclass_membership(root: PathLike | None = None, *, source: SuperclassSource = "bottom_up") -> pd.DataFrame:
    """Membership of every concept in the 27 categories, before any policy.

    Parameters
    ----------
    root : path, optional
    source : {"bottom_up", "manual"}
        See the module docstring.

    Returns
    -------
    DataFrame of bool, shape (1854, 27)
        Rows in THINGS order, columns :data:`SUPERCLASSES`.
    """
    if source == "bottom_up":
        return _bottom_up_membership(root)
    if source == "manual":
        return _manual_membership(root)
    raise ValueError(f"source must be 'bottom_up' or 'manual', got {source!r}")


def superclass_labels(
    root: PathLike | None = None,
    *,
    source: SuperclassSource = "bottom_up",
    policy: SuperclassPolicy = "exclude",
) -> pd.Series:
    """One superclass label per THINGS concept (or none).

    This is the single definition of the paper's 27 superclasses used everywhere in the project.

    Parameters
    ----------
    root : path, optional
        Data root.
    source : {"bottom_up", "manual"}
        ``bottom_up`` (default): the crowd-sourced column of ``things_concepts.tsv``; ``manual``: the 27-column
        matrix ``vice/category_mat_manual.tsv``.
    policy : {"exclude", "most_specific"}
        ``exclude`` (default): concepts in several categories get no label. ``most_specific``: they get the
        category with the fewest concepts (ties: first in :data:`SUPERCLASSES`). Concepts in no category never
        get a label.

    Returns
    -------
    Series of length 1854, dtype object
        Indexed by THINGS index 0..1853, named ``"superclass"``; a category name or ``None``.
    """
    if policy not in ("exclude", "most_specific"):
        raise ValueError(f"policy must be 'exclude' or 'most_specific', got {policy!r}")
    member = superclass_membership(root, source=source).to_numpy()
    n_member = member.sum(axis=1)
    labels = np.full(len(member), None, dtype=object)
    single = n_member == 1
    labels[single] = np.asarray(SUPERCLASSES, dtype=object)[member[single].argmax(axis=1)]
    if policy == "most_specific":
        size = member.sum(axis=0)  # concepts per category, in this source
        for i in np.nonzero(n_member > 1)[0]:
            cats = np.nonzero(member[i])[0]
            # argmin takes the first minimum, i.e. the first in SUPERCLASSES order on a tie
            labels[i] = SUPERCLASSES[cats[np.argmin(size[cats])]]
    return pd.Series(labels, index=pd.RangeIndex(len(labels)), name="superclass", dtype=object)


def load_sortindex(root: PathLike | None = None) -> np.ndarray:
    """The raw-to-THINGS permutation of ``vice/sortindex.txt``.

    ``things_order_array = raw_order_array[sortindex]``; a raw index ``r`` becomes THINGS index
    ``np.argsort(sortindex)[r]``.

    Returns
    -------
    ndarray of shape (1854,), int64
        A permutation of 0..1853.
    """
    path = data_file(layout.SORTINDEX, root)
    try:
        idx = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except ValueError as exc:
        raise ValueError(f"{path}: not a list of integers ({exc})") from exc
    if idx.shape != (layout.N_THINGS,) or not np.array_equal(np.sort(idx), np.arange(layout.N_THINGS)):
        raise ValueError(f"{path}: expected a permutation of 0..{layout.N_THINGS - 1}, got shape {idx.shape}")
    return idx


def raw_to_things(raw_index: np.ndarray, root: PathLike | None = None) -> np.ndarray:
    """Map 0-based raw (MTurk/SPoSE) object indices to THINGS indices.

    Parameters
    ----------
    raw_index : array_like of int, any shape
        Values in 0..1853.

    Returns
    -------
    ndarray of int64, same shape
    """
    inv = np.argsort(load_sortindex(root))
    arr = np.asarray(raw_index, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= layout.N_THINGS):
        raise ValueError(f"raw indices must lie in 0..{layout.N_THINGS - 1}, got {arr.min()}..{arr.max()}")
    return inv[arr]


def load_vice_embedding(root: PathLike | None = None, things_order: bool = True) -> np.ndarray:
    """The VICE 42-d embedding of the 1,854 THINGS objects (Muttenthaler et al. 2022).

    Parameters
    ----------
    root : path, optional
    things_order : bool
        True (default): rows in THINGS order (``E[sortindex]``). False: rows as stored, in raw triplet order.

    Returns
    -------
    ndarray of shape (1854, 42), float32
        Non-negative; a human-similarity space where the dot product predicts odd-one-out choices.
    """
    path = data_file(layout.VICE_EMBEDDING, root)
    emb = np.load(path, allow_pickle=False)
    if emb.ndim != 2 or emb.shape[0] != layout.N_THINGS:
        raise ValueError(f"{path}: expected shape ({layout.N_THINGS}, d), got {emb.shape}")
    if not np.isfinite(emb).all():
        raise ValueError(f"{path}: holds NaN/inf values")
    return emb[load_sortindex(root)] if things_order else emb
