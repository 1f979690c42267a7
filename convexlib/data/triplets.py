"""Human odd-one-out triplets as one array convention.

Every loader returns :class:`Triplets`: an ``int64`` array of shape (N, 3), 0-based item indices, where columns
0 and 1 are the pair judged most similar and column 2 is the human-chosen odd one out (gLocal's convention, the
one :mod:`convexlib.alignment` expects). THINGS triplets are in THINGS order (row order of
``things_concepts.tsv``); the Kriegeskorte triplets index the 92 images in their original order.

Sources and their raw conventions (converted here, documented in ``data/README.md``):

=================================  ======  ==========  =====================================================
file                               base    order       odd one out
=================================  ======  ==========  =====================================================
vice/test_triplets.csv (20,000)    1       raw MTurk   column 4 = *position* (1, 2, 3) of the odd item;
                                                       column 5 = participant id
THINGS-data ``triplets_large_*``   1       THINGS      the ``choice`` column: a position (1..3) or an item
(4.7 M, csv with header)                   (corrected) id; detected from the data, or given explicitly
SPoSE / THINGS-data ``*.txt``      0       THINGS      column 2 by default (``odd_column``)
gLocal ``train_90.npy``,           0       THINGS      column 2
``test_10.npy``
kriegeskorte92 similarity RDMs     0       image       derived: the image outside the least dissimilar pair
=================================  ======  ==========  =====================================================
"""

from __future__ import annotations

import functools
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from ..alignment import validate_triplets
from ..errors import DataNotFoundError
from ..paths import data_file, data_root
from . import layout
from .things import load_sortindex

PathLike = str | os.PathLike

__all__ = [
    "Triplets",
    "load_human_test_triplets",
    "load_things_triplets",
    "kriegeskorte_triplets",
    "triplets_from_dissimilarity",
    "THINGS_TRIPLETS_HOWTO",
]


@dataclass(frozen=True)
class Triplets:
    """Odd-one-out judgements.

    Attributes
    ----------
    array : ndarray of shape (N, 3), int64
        0-based item indices; columns 0-1 the pair kept together, column 2 the human odd one out.
    n_items : int
        Number of items indices refer to (1854 for THINGS, 92 for the Kriegeskorte images).
    source : str
        Where the judgements come from (file and conversion).
    judge : ndarray of shape (N,), int64, or None
        Participant / subject id per judgement where the source has one.
    meta : dict
        Free-form provenance (index base, order, counts).
    """

    array: np.ndarray
    n_items: int
    source: str
    judge: np.ndarray | None = None
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        arr = validate_triplets(self.array, self.n_items, name=f"triplets from {self.source}")
        arr = np.ascontiguousarray(arr, dtype=np.int64)
        arr.setflags(write=False)
        object.__setattr__(self, "array", arr)
        if self.judge is not None:
            judge = np.asarray(self.judge)
            if judge.shape != (len(arr),) or not np.issubdtype(judge.dtype, np.integer):
                raise ValueError(f"judge must be an integer array of shape ({len(arr)},), got {judge.dtype} {judge.shape}")
            judge = np.ascontiguousarray(judge, dtype=np.int64)
            judge.setflags(write=False)
            object.__setattr__(self, "judge", judge)

    def __len__(self) -> int:
        return len(self.array)

    def __repr__(self) -> str:
        judges = "no judge ids" if self.judge is None else f"{len(np.unique(self.judge))} judges"
        return f"Triplets(N={len(self)}, n_items={self.n_items}, source={self.source!r}, {judges})"


THINGS_TRIPLETS_HOWTO = (
    "The full THINGS odd-one-out triplets are not in the data root. Get them with\n"
    "    python -m convexlib.data fetch --only things-triplets\n"
    "(THINGS-data behavioural release, OSF project f5rn6, file triplets_large_final_correctednc_correctedorder.csv,\n"
    "4.70 M judgements), or download them yourself from https://osf.io/f5rn6/ and place them under\n"
    "<data root>/things-triplets/: the csv, SPoSE text files (trainset.txt, validationset.txt, ...: 0-based,\n"
    "THINGS order) or gLocal's train_90.npy + test_10.npy. See data/README.md."
)


# ----------------------------------------------------------------------------------------------------------------
# the 20,000 judgements of the 2020 noise-ceiling set
# ----------------------------------------------------------------------------------------------------------------


def _odd_last(items: np.ndarray, odd_pos: np.ndarray) -> np.ndarray:
    """Reorder each row so the item at ``odd_pos`` (0, 1 or 2) comes last; the other two keep their order."""
    keep = np.array([[1, 2], [0, 2], [0, 1]])[odd_pos]  # (N, 2) positions of the pair
    rows = np.arange(len(items))[:, None]
    return np.column_stack([items[rows, keep], items[np.arange(len(items)), odd_pos]])


def _check_int_table(table: np.ndarray, path: Path | str, ncols: int) -> None:
    if table.ndim != 2 or table.shape[1] < ncols:
        raise ValueError(f"{path}: expected at least {ncols} columns, got shape {table.shape}")


def _first_bad_row(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


def load_human_test_triplets(root: PathLike | None = None, remap: bool = True) -> Triplets:
    """The 20,000 real odd-one-out judgements of the 2020 noise-ceiling set (1,000 triplets x ~20 people).

    File ``vice/test_triplets.csv`` (tab-separated, no header): columns 1-3 are 1-based object indices in the
    raw MTurk order, column 4 the position (1, 2 or 3) of the chosen odd one out, column 5 the participant id.

    Parameters
    ----------
    root : path, optional
        Data root.
    remap : bool
        True (default): map raw indices to THINGS order through ``vice/sortindex.txt`` (changes 594 rows, those
        holding one of the 21 objects whose order differs). False: keep the raw order (0-based), e.g. to pair
        with the VICE embedding as stored.

    Returns
    -------
    Triplets
        ``array`` (20000, 3) int64 with the odd one out in column 2; ``judge`` = participant id.
    """
    path = data_file(layout.TEST_TRIPLETS, root)
    try:
        table = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not a tab-separated integer table ({exc})") from exc
    _check_int_table(table, path, 5)
    items1 = table[:, :3]
    bad = _first_bad_row(((items1 < 1) | (items1 > layout.N_THINGS)).any(axis=1))
    if bad is not None:
        raise ValueError(f"{path}: line {bad + 1}: object index outside 1..{layout.N_THINGS}: {table[bad].tolist()}")
    bad = _first_bad_row(~np.isin(table[:, 3], (1, 2, 3)))
    if bad is not None:
        raise ValueError(f"{path}: line {bad + 1}: column 4 must be the odd one's position 1, 2 or 3: {table[bad].tolist()}")
    items = items1 - 1
    order = "raw MTurk order"
    if remap:
        items = np.argsort(load_sortindex(root))[items]
        order = "THINGS order (remapped through vice/sortindex.txt)"
    arr = _odd_last(items, table[:, 3] - 1)
    return Triplets(
        arr,
        layout.N_THINGS,
        source=f"{layout.TEST_TRIPLETS} (2020 noise-ceiling set, {order})",
        judge=table[:, 4],
        meta={"file": str(path), "index_base_in_file": 1, "order": order, "remapped": bool(remap)},
    )


# ----------------------------------------------------------------------------------------------------------------
# full THINGS triplet sets (THINGS-data csv, SPoSE txt, gLocal npy)
# ----------------------------------------------------------------------------------------------------------------

ChoiceKind = Literal["auto", "position", "item"]

_ITEM_COLUMN_NAMES = (("image1", "image2", "image3"), ("item1", "item2", "item3"), ("object1", "object2", "object3"))
_CHOICE_COLUMN_NAMES = ("choice", "odd_one_out", "odd", "response")
_JUDGE_COLUMN_NAMES = ("subject_id", "subject", "participant", "participant_id", "workerid", "worker_id")


def _find_column(columns: Sequence[str], candidates: Iterable[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def _load_things_csv(path: Path, choice: ChoiceKind, index_base: int) -> Triplets:
    df = pd.read_csv(path)
    cols = list(df.columns)
    item_cols = None
    for names in _ITEM_COLUMN_NAMES:
        found = [_find_column(cols, (n,)) for n in names]
        if all(found):
            item_cols = found
            break
    choice_col = _find_column(cols, _CHOICE_COLUMN_NAMES)
    if item_cols is None or choice_col is None:
        raise ValueError(
            f"{path}: cannot find the item columns (image1, image2, image3) and the choice column among "
            f"{cols}; convert the file to an (N, 3) array with the odd one out last and use a .npy file instead"
        )
    judge_col = _find_column(cols, _JUDGE_COLUMN_NAMES)
    sub = df[item_cols + [choice_col]]
    if sub.isna().any(axis=None):
        bad = int(np.flatnonzero(sub.isna().any(axis=1).to_numpy())[0])
        raise ValueError(f"{path}: data row {bad + 1} (line {bad + 2}) has an empty item or choice cell")
    try:
        items = sub[item_cols].to_numpy().astype(np.int64) - index_base
        ch = sub[choice_col].to_numpy().astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: item and choice columns must be integers ({exc})") from exc
    bad = _first_bad_row(((items < 0) | (items >= layout.N_THINGS)).any(axis=1))
    if bad is not None:
        raise ValueError(
            f"{path}: data row {bad + 1} (line {bad + 2}): item index outside {index_base}..{layout.N_THINGS - 1 + index_base}: "
            f"{(items[bad] + index_base).tolist()}"
        )
    is_position = np.isin(ch, (1, 2, 3))
    is_item = ((items + index_base) == ch[:, None]).any(axis=1)
    if choice == "auto":
        if is_position.all() and not is_item.all():
            choice = "position"
        elif is_item.all() and not is_position.all():
            choice = "item"
        elif is_position.all() and is_item.all():
            raise ValueError(f"{path}: the {choice_col!r} column reads both as a position and as an item id; pass choice=")
        else:
            raise ValueError(
                f"{path}: the {choice_col!r} column is neither a position 1..3 nor one of the row's items in every row "
                f"(first non-position row {_first_bad_row(~is_position) + 1}, first non-item row {_first_bad_row(~is_item) + 1})"
            )
    if choice == "position":
        bad = _first_bad_row(~is_position)
        if bad is not None:
            raise ValueError(f"{path}: data row {bad + 1}: choice {ch[bad]} is not a position 1, 2 or 3")
        odd_pos = ch - 1
    elif choice == "item":
        bad = _first_bad_row(~is_item)
        if bad is not None:
            raise ValueError(f"{path}: data row {bad + 1}: choice {ch[bad]} is not one of the row's items")
        odd_pos = ((items + index_base) == ch[:, None]).argmax(axis=1)
    else:
        raise ValueError(f"choice must be 'auto', 'position' or 'item', got {choice!r}")
    judge = None
    if judge_col is not None and not df[judge_col].isna().any() and pd.api.types.is_integer_dtype(df[judge_col]):
        judge = df[judge_col].to_numpy(dtype=np.int64)
    return Triplets(
        _odd_last(items, odd_pos),
        layout.N_THINGS,
        source=f"{path.name} (THINGS-data csv, {index_base}-based, THINGS order, choice = {choice})",
        judge=judge,
        meta={"file": str(path), "index_base_in_file": index_base, "choice": choice, "judge_column": judge_col},
    )


def _load_array_file(path: Path, odd_column: int, index_base: int) -> np.ndarray:
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        try:
            arr = np.loadtxt(path, ndmin=2)
        except ValueError as exc:
            raise ValueError(f"{path}: not a whitespace-separated numeric table ({exc})") from exc
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{path}: expected an (N, 3) table, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        nonint = _first_bad_row((arr != np.round(arr)).any(axis=1) | ~np.isfinite(arr).all(axis=1))
        if nonint is not None:
            raise ValueError(f"{path}: row {nonint}: non-integer index {arr[nonint].tolist()}")
    arr = arr.astype(np.int64) - index_base
    bad = _first_bad_row(((arr < 0) | (arr >= layout.N_THINGS)).any(axis=1))
    if bad is not None:
        raise ValueError(
            f"{path}: row {bad} (0-based): index outside {index_base}..{layout.N_THINGS - 1 + index_base}: "
            f"{(arr[bad] + index_base).tolist()}"
        )
    if odd_column not in (0, 1, 2):
        raise ValueError(f"odd_column must be 0, 1 or 2, got {odd_column!r}")
    return _odd_last(arr, np.full(len(arr), odd_column))


def _triplet_files_in(folder: Path) -> list[Path]:
    csv = folder / Path(layout.THINGS_TRIPLETS_CSV).name
    if csv.is_file():
        return [csv]
    npy = [folder / "train_90.npy", folder / "test_10.npy"]
    if all(p.is_file() for p in npy):
        return npy
    return sorted(p for p in folder.glob("*.npy")) or sorted(p for p in folder.glob("*.txt"))


def load_things_triplets(
    path_or_root: PathLike | None = None,
    *,
    choice: ChoiceKind = "auto",
    odd_column: int = 2,
    index_base: int | None = None,
) -> Triplets:
    """The full THINGS odd-one-out triplets, from whichever release the user has.

    Parameters
    ----------
    path_or_root : path, optional
        A triplet file, a folder holding triplet files, or a data root (then ``<root>/things-triplets/``).
        Default: the data root. Recognised files, in this order of preference:

        * ``triplets_large_final_correctednc_correctedorder.csv`` (THINGS-data, 4.70 M judgements; header row;
          1-based indices already in THINGS order; columns ``image1..3``, ``choice`` and, if present, a subject
          column used as ``judge``);
        * gLocal ``train_90.npy`` + ``test_10.npy`` (concatenated; 0-based, THINGS order, odd one out in column 2);
        * any other ``*.npy`` or SPoSE-style ``*.txt`` (whitespace-separated, 0-based, THINGS order).
    choice : {"auto", "position", "item"}
        Meaning of the csv's ``choice`` column: the odd item's position 1..3 in its row, or its item id.
        ``auto`` detects it from the data (a position column only holds 1..3; an item column always names one
        of the row's items) and refuses when both or neither reading fits every row.
    odd_column : int
        Column of the odd one out in ``.npy``/``.txt`` files (default 2, the gLocal/SPoSE convention). Check it
        with the VICE embedding: a correct column gives roughly 60 % odd-one-out accuracy, a wrong one ~20 %.
    index_base : int, optional
        Index base of the file (default: 1 for the csv, 0 for ``.npy``/``.txt``).

    Returns
    -------
    Triplets

    Raises
    ------
    DataNotFoundError
        No triplet file found; the message says how to get one.
    """
    if path_or_root is None:
        base = data_root(None, must_exist=False)
    else:
        base = Path(path_or_root).expanduser()
    if base.is_dir():
        if (base / layout.THINGS_TRIPLETS_DIR).is_dir():
            folder = base / layout.THINGS_TRIPLETS_DIR
        elif (base / layout.THINGS_CONCEPTS).is_file():  # a data root without the triplet folder
            raise DataNotFoundError(f"{base / layout.THINGS_TRIPLETS_DIR} does not exist.\n{THINGS_TRIPLETS_HOWTO}")
        else:
            folder = base
        files = _triplet_files_in(folder)
        if not files:
            raise DataNotFoundError(f"no THINGS triplet file in {folder}.\n{THINGS_TRIPLETS_HOWTO}")
    elif base.is_file():
        files = [base]
    else:
        raise DataNotFoundError(f"{base} does not exist.\n{THINGS_TRIPLETS_HOWTO}")

    if files[0].suffix == ".csv":
        if len(files) != 1:
            raise ValueError(f"expected one csv file, got {files}")
        return _load_things_csv(files[0], choice, 1 if index_base is None else index_base)
    base_idx = 0 if index_base is None else index_base
    parts = []
    for f in files:
        if f.suffix not in (".npy", ".txt"):
            raise ValueError(f"{f}: unsupported triplet file type {f.suffix!r} (use .csv, .npy or .txt)")
        parts.append(_load_array_file(f, odd_column, base_idx))
    names = ", ".join(f.name for f in files)
    return Triplets(
        np.concatenate(parts, axis=0),
        layout.N_THINGS,
        source=f"{names} ({base_idx}-based, THINGS order, odd one out from column {odd_column})",
        meta={"files": [str(f) for f in files], "index_base_in_file": base_idx, "odd_column": odd_column,
              "rows_per_file": [len(p) for p in parts]},
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# triplets derived from similarity-judgement matrices (extension beyond the paper)
# ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _combinations3(n: int) -> np.ndarray:
    """All ``i < j < k`` below ``n`` in lexicographic order, shape (C(n, 3), 3), read-only."""
    combos = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), 3)), dtype=np.int64)
    combos = combos.reshape(-1, 3)
    combos.setflags(write=False)
    return combos


def triplets_from_dissimilarity(D: np.ndarray) -> tuple[np.ndarray, int]:
    """All odd-one-out triplets implied by one dissimilarity matrix.

    For every set of three items ``i < j < k`` the pair with the smallest dissimilarity stays together and the
    third item is the odd one out. Sets whose smallest dissimilarity is shared by two or three pairs (exact
    float ties) are dropped.

    Parameters
    ----------
    D : ndarray of shape (n, n)
        Symmetric, finite dissimilarities.

    Returns
    -------
    triplets : ndarray of shape (M, 3), int64
        Pair (ascending) in columns 0-1, odd one out in column 2; rows in lexicographic order of ``(i, j, k)``.
    n_ties : int
        Number of item sets dropped for a tie.
    """
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 2 or D.shape[0] != D.shape[1] or D.shape[0] < 3:
        raise ValueError(f"dissimilarity matrix must be square with n >= 3, got shape {D.shape}")
    if not np.isfinite(D).all():
        raise ValueError("dissimilarity matrix holds NaN/inf")
    if not np.allclose(D, D.T):
        raise ValueError("dissimilarity matrix is not symmetric")
    combos = _combinations3(D.shape[0])
    i, j, k = combos.T
    d = np.stack([D[i, j], D[i, k], D[j, k]], axis=1)  # pairs (ij, ik, jk) -> odd k, j, i
    low = d.min(axis=1)
    unique_min = (d == low[:, None]).sum(axis=1) == 1
    pair = d.argmin(axis=1)
    pair_items = np.array([[0, 1], [0, 2], [1, 2]])[pair]
    odd = np.array([2, 1, 0])[pair]
    rows = np.arange(len(combos))[:, None]
    out = np.column_stack([combos[rows, pair_items], combos[np.arange(len(combos)), odd]])
    return out[unique_min], int((~unique_min).sum())


def kriegeskorte_triplets(root: PathLike | None = None, subjects: Sequence[int] | None = None) -> Triplets:
    """Odd-one-out triplets derived from the 16 human similarity-judgement matrices of the 92 Kriegeskorte images.

    **An extension beyond the paper**, for real human image judgements offline: for each subject (Mur et al.
    2013, multi-arrangement) and each set of three of the 92 images, the odd one out is the image outside the
    pair with the smallest dissimilarity; exact ties are dropped (none occur in this data). These are implied
    by one arrangement per subject, not judged as triplets.

    Parameters
    ----------
    root : path, optional
    subjects : sequence of int, optional
        0-based subject indices (0..15); default all 16.

    Returns
    -------
    Triplets
        ``n_items`` = 92 (image order of ``kriegeskorte92/stimuli.tsv``); ``judge`` = subject index; at most
        125,580 triplets per subject.
    """
    path = data_file(layout.KRIEGESKORTE_SIMJUDGE, root)
    rdms = np.load(path, allow_pickle=False)
    if rdms.ndim != 3 or rdms.shape[1:] != (92, 92):
        raise ValueError(f"{path}: expected shape (n_subjects, 92, 92), got {rdms.shape}")
    all_subjects = list(range(rdms.shape[0]))
    chosen = all_subjects if subjects is None else [int(s) for s in subjects]
    bad = [s for s in chosen if s not in all_subjects]
    if bad or not chosen:
        raise ValueError(f"subjects must be a non-empty selection of 0..{rdms.shape[0] - 1}, got {list(subjects or [])}")
    parts, judges, ties = [], [], {}
    for s in chosen:
        try:
            t, n_ties = triplets_from_dissimilarity(rdms[s])
        except ValueError as exc:
            raise ValueError(f"{path}: subject {s}: {exc}") from exc
        parts.append(t)
        judges.append(np.full(len(t), s, dtype=np.int64))
        ties[s] = n_ties
    return Triplets(
        np.concatenate(parts),
        92,
        source=f"{layout.KRIEGESKORTE_SIMJUDGE} (derived from similarity judgements; extension beyond the paper)",
        judge=np.concatenate(judges),
        meta={"file": str(path), "subjects": chosen, "ties_dropped": ties},
    )
