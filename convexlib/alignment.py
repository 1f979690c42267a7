"""Human-machine alignment: odd-one-out accuracy (OOOA) on triplet judgements, and noise ceilings.

Triplet convention (gLocal, SPEC §2.2): an ``(N, 3)`` integer array, 0-based item indices, where columns 0 and
1 are the pair the human judged most similar and column 2 is the human-chosen odd one out.

Decision rule (SPEC §4.3): the model keeps together the pair with the highest similarity; the third item is its
odd one out. A triplet counts as correct only if the human pair's similarity is *strictly* greater than both
other pair similarities; any tie at the top is a wrong answer (prediction ``-1``), as in the reference code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Similarity = Literal["cosine", "dot", "euclidean"]
Scale = Literal["none", "scalar", "dim"]

__all__ = [
    "OOOAResult",
    "NoiseCeiling",
    "validate_triplets",
    "check_finite",
    "standardize",
    "similarity_matrix",
    "odd_one_out_accuracy",
    "noise_ceiling",
]


def check_finite(X: np.ndarray, name: str = "X") -> np.ndarray:
    """Return ``X`` as a 2-d float array; raise ``ValueError`` if it is not 2-d or holds NaN/inf.

    Parameters
    ----------
    X : array_like of shape (n, d)
    name : str
        Name used in the error message.
    """
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (n_items, n_features), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False) if not np.issubdtype(arr.dtype, np.floating) else arr
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN/inf value(s) in {len(rows)} row(s), first rows: {rows[:5].tolist()}"
        )
    return arr


def check_count(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool) of at least ``minimum``; else ``ValueError``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_jobs(n_jobs: object) -> int:
    """A worker count: -1 (one per core) or an integer >= 1; else ``ValueError``."""
    return -1 if n_jobs == -1 and not isinstance(n_jobs, (bool, np.bool_)) else check_count(
        n_jobs, "n_jobs (or -1 for all cores)")


def power_of_two_below(x: float) -> float:
    """The power of two ``s`` with ``x / s`` in [1, 2), for ``x > 0`` (1.0 otherwise).

    Dividing an array by ``s`` is exact in floating point (barring subnormals): every sum, difference, product
    ordering and tie is kept, while the values come to order 1 (no overflow of squares at 1e300, no underflow at
    1e-300).
    """
    if not x > 0:
        return 1.0
    return float(np.ldexp(1.0, int(np.frexp(x)[1]) - 1))


def validate_triplets(triplets: np.ndarray, n_items: int | None = None, name: str = "triplets") -> np.ndarray:
    """Check a triplet array and return it as ``int64`` of shape (N, 3).

    Parameters
    ----------
    triplets : array_like of shape (N, 3)
        Integer item indices; column 2 is the human odd one out.
    n_items : int, optional
        Number of items; indices must lie in ``[0, n_items)``.

    Raises
    ------
    ValueError
        Not 2-d with 3 columns, not integers, empty, negative or out-of-range indices, or a triplet that repeats
        an item. The message names the first offending row.
    """
    arr = np.asarray(triplets)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must be an (N, 3) array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}; convert with .astype(np.int64)")
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    neg = np.nonzero((arr < 0).any(axis=1))[0]
    if len(neg):
        raise ValueError(f"{name} has negative indices, first at row {int(neg[0])}: {arr[neg[0]].tolist()}")
    if n_items is not None:
        out = np.nonzero((arr >= n_items).any(axis=1))[0]
        if len(out):
            raise ValueError(
                f"{name} index out of range for {n_items} items, first at row {int(out[0])}: {arr[out[0]].tolist()}"
            )
    dup = np.nonzero((arr[:, 0] == arr[:, 1]) | (arr[:, 0] == arr[:, 2]) | (arr[:, 1] == arr[:, 2]))[0]
    if len(dup):
        raise ValueError(f"{name} repeats an item within a triplet, first at row {int(dup[0])}: {arr[dup[0]].tolist()}")
    return arr


def standardize(
    X: np.ndarray, *, center: bool = True, scale: Scale = "none", reference: np.ndarray | None = None
) -> np.ndarray:
    """Centre and scale representations.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    center : bool
        Subtract the per-dimension mean (the paper's "mean representation").
    scale : {"none", "scalar", "dim"}
        Divide by nothing, by the standard deviation of the whole (centred) matrix, or per dimension
        (dimensions with zero spread are left unscaled).
    reference : ndarray of shape (m, d), optional
        Compute the statistics on this set instead of ``X`` (e.g. the triplet images).

    Returns
    -------
    ndarray of shape (n, d), float64
    """
    X = np.asarray(X, dtype=np.float64)
    ref = X if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != X.shape[1]:
        raise ValueError(f"reference must have shape (m, {X.shape[1]}), got {ref.shape}")
    mu = ref.mean(axis=0) if center else np.zeros(X.shape[1])
    out = X - mu
    # spreads computed on (ref - mu) / peak and scaled back, peak a power of two (exact): no overflow of squares at
    # 1e200, no underflow at 1e-200
    peak = power_of_two_below(float(np.abs(ref - mu).max()) if ref.size else 0.0)
    if scale == "scalar":
        s = peak * float(((ref - mu) / peak).std())
        if s > 0:
            out = out / s
    elif scale == "dim":
        s = peak * ((ref - mu) / peak).std(axis=0)
        out = out / np.where(s > 0, s, 1.0)
    elif scale != "none":
        raise ValueError(f"scale must be 'none', 'scalar' or 'dim', got {scale!r}")
    return out


def similarity_matrix(X: np.ndarray, similarity: Similarity = "cosine") -> np.ndarray:
    """Pairwise similarity matrix.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    similarity : {"cosine", "dot", "euclidean"}
        ``euclidean`` returns the negative Euclidean distance, so that larger always means more similar.

    Returns
    -------
    ndarray of shape (n, n), float64

    Raises
    ------
    ValueError
        Cosine similarity of a zero vector (undefined).
    """
    X = np.asarray(X, dtype=np.float64)
    if similarity not in ("cosine", "dot", "euclidean"):
        raise ValueError(f"similarity must be 'cosine', 'dot' or 'euclidean', got {similarity!r}")
    if similarity == "dot":
        return X @ X.T
    if similarity == "cosine":
        norms = np.linalg.norm(X, axis=1)
        zero = np.nonzero(norms == 0)[0]
        if len(zero):
            raise ValueError(
                f"cosine similarity is undefined for zero vectors; rows {zero[:5].tolist()} are zero "
                "(after centring, if centring was requested)"
            )
        Y = X / norms[:, None]
        return Y @ Y.T
    # euclidean
    X = X - X.mean(axis=0)  # distances do not depend on the origin; a far origin would cost digits
    sq = np.einsum("ij,ij->i", X, X)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (X @ X.T), 0.0)
    np.fill_diagonal(d2, 0.0)
    return -np.sqrt(d2)


@dataclass(frozen=True)
class OOOAResult:
    """Odd-one-out accuracy of one representation on one triplet set.

    Attributes
    ----------
    accuracy : float
        Share of triplets whose predicted odd one out is the human choice, in [0, 1].
    predictions : ndarray of shape (N,), int64
        Predicted odd-one-out *position* within each triplet (0, 1 or 2), or ``-1`` for a tie at the top.
    correct : ndarray of shape (N,), bool
    n_triplets : int
    settings : dict
    """

    accuracy: float
    predictions: np.ndarray
    correct: np.ndarray
    n_triplets: int
    settings: dict

    @property
    def percent(self) -> float:
        """Accuracy in percent."""
        return 100.0 * self.accuracy


def _triplet_similarities(S: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Similarities of the three pairs (0,1), (0,2), (1,2) of each triplet, shape (N, 3)."""
    return np.stack([S[t[:, 0], t[:, 1]], S[t[:, 0], t[:, 2]], S[t[:, 1], t[:, 2]]], axis=1)


def odd_one_out_accuracy(
    X: np.ndarray,
    triplets: np.ndarray,
    *,
    similarity: Similarity = "cosine",
    center: bool = True,
    scale: Scale = "none",
) -> OOOAResult:
    """Odd-one-out accuracy of representations ``X`` on human triplets.

    The paper's zero-shot setting is ``similarity="cosine", center=True`` (per-dimension centring over the items
    of ``X``); the gLocal/VICE setting is ``similarity="dot", center=False``.

    Parameters
    ----------
    X : array_like of shape (n_items, d)
        One representation per item, rows indexed by the triplet indices.
    triplets : array_like of shape (N, 3), int
        Column 2 is the human odd one out.
    similarity : {"cosine", "dot", "euclidean"}
    center : bool
        Subtract the per-dimension mean over the rows of ``X`` first.
    scale : {"none", "scalar", "dim"}
        Then divide by the scalar or per-dimension standard deviation (no effect on cosine for "scalar").

    Returns
    -------
    OOOAResult
    """
    X = check_finite(X)
    t = validate_triplets(triplets, X.shape[0])
    Z = standardize(X, center=center, scale=scale)
    # a power of two changes no similarity ranking and no tie; it keeps products from overflow and underflow
    S = similarity_matrix(Z / power_of_two_below(float(np.abs(Z).max()) if Z.size else 0.0), similarity)
    sims = _triplet_similarities(S, t)
    top = sims.max(axis=1)
    n_top = (sims == top[:, None]).sum(axis=1)
    # pair k in (01, 02, 12) kept together -> odd one out at position (2, 1, 0)
    odd_of_pair = np.array([2, 1, 0], dtype=np.int64)
    predictions = np.where(n_top == 1, odd_of_pair[sims.argmax(axis=1)], -1)
    correct = predictions == 2
    return OOOAResult(
        accuracy=float(correct.mean()),
        predictions=predictions,
        correct=correct,
        n_triplets=int(len(t)),
        settings={"similarity": similarity, "center": center, "scale": scale},
    )


@dataclass(frozen=True)
class NoiseCeiling:
    """Agreement among repeated human judgements of the same triplets.

    Attributes
    ----------
    majority : float
        Mean agreement of each judgement with the majority choice of its triplet (the judgement itself
        included); a tied majority counts fractionally (1/number of tied choices). Hebart et al.'s ceiling.
    leave_one_out : float
        Mean agreement of each judgement with the majority of the *other* judgements of its triplet
        (fractional on ties); triplets judged once are left out.
    n_triplets : int
        Distinct triplets (item sets).
    n_judgements : int
    """

    majority: float
    leave_one_out: float
    n_triplets: int
    n_judgements: int


def noise_ceiling(triplets: np.ndarray) -> NoiseCeiling:
    """Noise ceiling of repeated odd-one-out judgements.

    Judgements are grouped by the *set* of their three items (item order within a row does not matter); the
    chosen odd one out is the item in column 2.

    Parameters
    ----------
    triplets : array_like of shape (N, 3), int

    Returns
    -------
    NoiseCeiling
    """
    t = validate_triplets(triplets)
    keys = np.sort(t, axis=1)
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.ravel()
    n_groups = int(group.max()) + 1
    # position of the chosen item within the sorted key: 0, 1 or 2
    choice = (keys == t[:, 2:3]).argmax(axis=1)
    counts = np.zeros((n_groups, 3), dtype=np.int64)
    np.add.at(counts, (group, choice), 1)

    # with the judgement itself included
    top = counts.max(axis=1)
    n_tied = (counts == top[:, None]).sum(axis=1)
    own = counts[group, choice]
    majority = np.where(own == top[group], 1.0 / n_tied[group], 0.0)

    # leave one out: remove this judgement's vote, then compare with the others' majority
    others = counts[group].copy()
    others[np.arange(len(t)), choice] -= 1
    n_other = others.sum(axis=1)
    keep = n_other > 0
    o_top = others.max(axis=1)
    o_tied = (others == o_top[:, None]).sum(axis=1)
    o_own = others[np.arange(len(t)), choice]
    loo = np.where(o_own == o_top, 1.0 / o_tied, 0.0)
    if not keep.any():
        raise ValueError("leave-one-out noise ceiling needs triplets judged at least twice")
    return NoiseCeiling(
        majority=float(majority.mean()),
        leave_one_out=float(loo[keep].mean()),
        n_triplets=n_groups,
        n_judgements=int(len(t)),
    )
