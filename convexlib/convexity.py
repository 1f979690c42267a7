"""Graph convexity of labelled point clouds (Tětková et al.; the paper's §2.1 and Alg. A.1; SPEC §4.1).

Definition
----------
All points of one layer form a single graph: each point is joined to its ``n_neighbors`` nearest neighbours,
the relation is symmetrised by union (an undirected, non-mutual kNN graph) and each edge is weighted by the
distance of its end points. For a class A and an ordered pair x != y of its points, take the shortest weighted
path P = (v0 = x, ..., vn = y) and score it

* no path (x and y in different connected components): 0;
* a direct edge (n = 1): 1;
* otherwise the share of the *interior* vertices v1..v(n-1) that lie in A.

Up to ``max_paths`` ordered pairs are drawn per class without replacement (all of them when there are fewer).
A class's score is the mean of its pair scores; the layer's score is the mean over classes (the paper's
number). The mean over all pooled paths is reported too (``nnconvexity``'s number); the two agree when every
class contributes the same number of paths.

Duplicates
----------
The reference code takes the ``k + 1`` nearest points of each point (itself included) and keeps only those at
distance > 0. Exact duplicates of a point therefore take up neighbour slots and are never joined to it. That
is the default here (``duplicates="drop"``). ``duplicates="connect"`` instead joins each point to its ``k``
nearest *other* points, duplicates included, with zero-weight edges.

Implementation
--------------
The kNN graph is found block by block (never a dense N x N matrix) and kept sparse. Shortest paths run once per
distinct source point with :func:`scipy.sparse.csgraph.dijkstra` and a distance ``limit``: Dijkstra settles
vertices in order of distance, so a search limited to the distance of the farthest same-class target does the
same work as one stopped once every target is settled. The limit starts at a multiple of the largest direct
distance to a target and grows until every target is reached; pairs in different connected components are
known unreachable beforehand. Path scores are read from the predecessor arrays, vectorised over targets.
Large problems are split over processes (``n_jobs``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Hashable, Literal, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, dijkstra

from .alignment import check_count, check_finite, check_jobs, power_of_two_below

Metric = Literal["euclidean", "cosine"]
Duplicates = Literal["drop", "connect"]

# Bumped whenever graph_convexity can return other numbers for the same input (cache keys include it):
# 2 = exact kNN graph (certified float32 search with an exact fallback).
ALGORITHM_VERSION = 2
_BLOCK_SIZE = 1024  # rows per block of the neighbour search

__all__ = ["ConvexityResult", "knn_graph", "graph_convexity", "encode_labels", "missing_labels", "sample_pairs"]


# --------------------------------------------------------------------------------------------------------------
# labels and pairs
# --------------------------------------------------------------------------------------------------------------


def missing_labels(labels: Sequence[Hashable] | np.ndarray) -> np.ndarray:
    """Boolean mask, shape (n,), of labels that are missing: ``None``, a float NaN, or a pandas missing value
    (``pd.NA``, ``NaT``; e.g. from an ``Int64`` or ``string`` column)."""
    import pandas as pd

    arr = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if arr.dtype.kind in "fmM":
        return np.asarray(pd.isna(arr), dtype=bool)
    if arr.dtype.kind != "O":
        return np.zeros(arr.shape, dtype=bool)

    def _missing(v: object) -> bool:
        if v is None or v is pd.NA or v is pd.NaT:
            return True
        if isinstance(v, (float, np.floating)):
            return v != v
        return isinstance(v, (np.datetime64, np.timedelta64)) and np.isnat(v)

    return np.fromiter((_missing(v) for v in arr.ravel().tolist()), dtype=bool, count=arr.size).reshape(arr.shape)


def encode_labels(labels: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, list]:
    """Map arbitrary hashable labels to integer codes 0..C-1.

    Classes are ordered by sorted label value when the labels are sortable, else by first appearance.

    Parameters
    ----------
    labels : sequence of length n

    Returns
    -------
    codes : ndarray of shape (n,), int64
    classes : list of length C, the label of each code
    """
    arr = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if arr.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {arr.shape}")
    missing = np.flatnonzero(missing_labels(arr))
    if len(missing):
        raise ValueError(
            f"labels contain {len(missing)} missing value(s) (None/NaN), first rows: {missing[:5].tolist()}; "
            "drop those points first (keep = labels that are not missing; X[keep], labels[keep])"
        )
    try:
        classes, codes = np.unique(arr, return_inverse=True)
        return codes.ravel().astype(np.int64), classes.tolist()
    except TypeError:
        order: dict = {}
        codes = np.array([order.setdefault(v, len(order)) for v in arr.tolist()], dtype=np.int64)
        return codes, list(order)


def sample_pairs(n: int, max_paths: int, rng: np.random.Generator) -> np.ndarray:
    """Draw up to ``max_paths`` distinct ordered pairs (i, j), i != j, from ``n`` items without replacement.

    Parameters
    ----------
    n : int
        Number of items (>= 2).
    max_paths : int
    rng : numpy Generator

    Returns
    -------
    ndarray of shape (m, 2), int64, with m = min(max_paths, n (n - 1)). All pairs, in enumeration order, when
    ``max_paths >= n (n - 1)``.
    """
    total = n * (n - 1)
    if max_paths >= total:
        q = np.arange(total, dtype=np.int64)
    else:
        q = np.sort(rng.choice(total, size=max_paths, replace=False)).astype(np.int64)
    i = q // (n - 1)
    r = q % (n - 1)
    j = np.where(r < i, r, r + 1)
    return np.column_stack([i, j])


# --------------------------------------------------------------------------------------------------------------
# kNN graph
# --------------------------------------------------------------------------------------------------------------


def _exact_frame(X: np.ndarray, metric: Metric) -> tuple[np.ndarray, float]:
    """The points in the frame distances are computed in, and the factor back to the units of ``X``.

    Returns
    -------
    Z : ndarray of shape (n, d), float64
        Euclidean: ``X / s`` with ``s`` the power of two at or just below ``max |X|``. Dividing by a power of two is
        exact in floating point, so every difference, distance and tie is that of ``X`` scaled by ``1 / s``: the
        graph, its tie-breaks and its shortest paths are bit for bit those of ``X``, but no square overflows at
        1e300 or underflows at 1e-300. Cosine: rows scaled to unit length (cosine is scale-invariant per row).
    s : float
        Euclidean distances in ``Z`` times ``s`` are those in ``X``; 1.0 for cosine.
    """
    if X.shape[1] == 0:
        raise ValueError("X has no features (shape (n, 0))")
    if metric == "euclidean":
        peak = float(np.abs(X).max())
        if peak == 0 or (X == X[0]).all():
            raise ValueError("all points of X are identical: the kNN graph has no edges")
        s = power_of_two_below(peak)  # max |X / s| in [1, 2), exactly
        return X / s, s
    if metric == "cosine":
        peak = np.abs(X).max(axis=1)
        zero = np.nonzero(peak == 0)[0]
        if len(zero):
            raise ValueError(f"cosine distance is undefined for zero vectors; rows {zero[:5].tolist()} are zero")
        Y = X / peak[:, None]
        return Y / np.linalg.norm(Y, axis=1)[:, None], 1.0
    raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")


def _search_frame(Z: np.ndarray, metric: Metric) -> tuple[np.ndarray, float]:
    """Centred points for the candidate search, float64 of shape (n, d), and the factor ``r`` with
    ``distance_search = distance_exact / r`` (Euclidean: the RMS distance to the centre, so coordinates are of
    order 1 and no digits are lost to a large mean; cosine: 1, squared search distances are ``2 (1 - cos)``)."""
    if metric == "cosine":
        return Z, 1.0
    Y = Z - Z.mean(axis=0)
    rms = float(np.sqrt(np.einsum("ij,ij->", Y, Y) / len(Y)))
    return Y / rms, rms


# Bound on the error of a squared distance |a|^2 + |b|^2 - 2 a.b computed in a floating-point type of unit
# roundoff u from points rounded to that type: (2 d + 8) u (|a|^2 + |b|^2) covers the rounding of the coordinates,
# of the two norms and of the dot product (d terms), and of the final sums.
def _sq_dist_tolerance(d: int, unit: float) -> float:
    return (2 * d + 8) * unit


def _exact_distances(Y: np.ndarray, rows: np.ndarray, cand: np.ndarray, metric: Metric) -> np.ndarray:
    """Distances between ``Y[rows[i]]`` and ``Y[cand[i, j]]``, computed directly in float64, shape cand.shape."""
    sq = np.empty(cand.shape, dtype=np.float64)
    step = max(1, 2**21 // max(1, cand.shape[1] * Y.shape[1]))  # ~16 MB of differences at a time
    for a in range(0, len(rows), step):
        diff = Y[cand[a : a + step]] - Y[rows[a : a + step]][:, None, :]
        sq[a : a + step] = np.einsum("ijk,ijk->ij", diff, diff)
    d = np.sqrt(sq)
    if metric == "cosine":
        d = 0.5 * d * d  # 1 - cos(u, v) for unit vectors u, v
    return d


def _check_graph_args(n: int, n_neighbors: object, duplicates: object) -> int:
    """``n_neighbors`` as an int after checking it against ``n`` points, and the ``duplicates`` rule."""
    k = check_count(n_neighbors, "n_neighbors")
    if k >= n:
        raise ValueError(f"n_neighbors ({k}) must be smaller than the number of points ({n})")
    if duplicates not in ("drop", "connect"):
        raise ValueError(f"duplicates must be 'drop' or 'connect', got {duplicates!r}")
    return k


def knn_graph(
    X: np.ndarray,
    n_neighbors: int = 10,
    *,
    metric: Metric = "euclidean",
    duplicates: Duplicates = "drop",
    block_size: int = _BLOCK_SIZE,
) -> sp.csr_matrix:
    """Union-symmetrised kNN graph with distance weights, as a sparse matrix.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    n_neighbors : int
        k; must be smaller than n.
    metric : {"euclidean", "cosine"}
        Edge weight: Euclidean distance or cosine distance 1 - cos.
    duplicates : {"drop", "connect"}
        See the module docstring.
    block_size : int
        Rows per block when searching neighbours (memory ~ block_size x n floats).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (n, n)
        Symmetric; entry (i, j) is the distance when i and j are joined. With ``duplicates="connect"`` edges
        between duplicates are stored as explicit zeros.
    """
    X = check_finite(X)
    n_neighbors = _check_graph_args(X.shape[0], n_neighbors, duplicates)
    block_size = check_count(block_size, "block_size")
    Z, scale = _exact_frame(X.astype(np.float64, copy=False), metric)
    A = _knn_in_frame(Z, n_neighbors, metric, duplicates, block_size)
    if scale != 1.0:
        A.data *= scale  # exact: a power of two
    return A


def _select(cand: np.ndarray, exact: np.ndarray, self_row: int, k_take: int, duplicates: Duplicates,
            ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k_take`` nearest of one row's candidates by (exact distance, index), and their distances."""
    if duplicates == "connect":
        exact = np.where(cand == self_row, np.inf, exact)
    order = np.lexsort((cand, exact))[:k_take]
    return cand[order], exact[order]


def _knn_in_frame(Y: np.ndarray, n_neighbors: int, metric: Metric, duplicates: Duplicates,
                  block_size: int) -> sp.csr_matrix:
    """:func:`knn_graph` of points already in their exact frame (see :func:`_exact_frame`), weights in it.

    The neighbours are exactly those of a brute-force search over exact float64 distances with ties resolved by
    the lower index, found in three steps: a float32 search proposes ``k + 17`` candidates per row, which are
    re-ranked by exact distances; a row is accepted when the float32 error bound proves that no point outside
    its candidates can be as close as its k-th neighbour. The other rows (points packed much tighter than the
    spread of the whole set, or many points tied at the k-th distance) are searched again in float64, and every
    point that the float64 bound cannot rule out is re-ranked exactly.
    """
    n, d = Y.shape
    S, r = _search_frame(Y, metric)
    Sf = S.astype(np.float32)
    sqf = np.einsum("ij,ij->i", Sf, Sf)
    k_take = n_neighbors + 1 if duplicates == "drop" else n_neighbors
    n_cand = min(n, k_take + 16)  # candidates from the fast float32 search, re-ranked exactly
    c32 = _sq_dist_tolerance(d, 2.0**-24)
    nb_all = np.empty((n, k_take), dtype=np.int64)
    dist_all = np.empty((n, k_take), dtype=np.float64)
    unsure: list[np.ndarray] = []
    for start in range(0, n, block_size):
        rows = np.arange(start, min(start + block_size, n))
        approx = sqf[rows, None] + sqf[None, :] - 2.0 * (Sf[rows] @ Sf.T)
        if n_cand < n:
            cand = np.argpartition(approx, n_cand - 1, axis=1)[:, :n_cand]
        else:
            cand = np.broadcast_to(np.arange(n), (len(rows), n)).copy()
        exact = _exact_distances(Y, rows, cand, metric)
        if duplicates == "connect":
            exact[cand == rows[:, None]] = np.inf
        # order by (distance, index): ties resolved by the lower index, as pandas' nsmallest(keep="first")
        order = np.lexsort((cand, exact), axis=1)[:, :k_take]
        nb_all[rows] = np.take_along_axis(cand, order, axis=1)
        dist_all[rows] = np.take_along_axis(exact, order, axis=1)
        if n_cand < n:
            # an excluded point j has approx_j >= the largest candidate approx A; its true squared search
            # distance D_j >= (A - 3 c |s_i|^2) / (1 + 2 c) (using |s_j|^2 <= 2 |s_i|^2 + 2 D_j)
            a_bnd = np.take_along_axis(approx, cand, axis=1).max(axis=1).astype(np.float64)
            kth = dist_all[rows, -1]
            kth_sq = 2.0 * kth if metric == "cosine" else (kth / r) ** 2
            lower = (a_bnd - 3.0 * c32 * sqf[rows]) / (1.0 + 2.0 * c32)
            bad = ~(lower > kth_sq * (1.0 + 1e-12))
            if bad.any():
                unsure.append(rows[bad])
    if unsure:
        _knn_refine(Y, S, r, np.concatenate(unsure), k_take, metric, duplicates, nb_all, dist_all)
    keep = dist_all > 0 if duplicates == "drop" else np.isfinite(dist_all)
    r_idx = np.broadcast_to(np.arange(n)[:, None], nb_all.shape)[keep]
    c_idx = nb_all[keep]
    v = dist_all[keep]
    # union symmetrisation: an edge exists if either end lists the other; both directions carry d(i, j)
    rr = np.concatenate([r_idx, c_idx])
    cc = np.concatenate([c_idx, r_idx])
    vv = np.concatenate([v, v])
    key = rr * n + cc
    _, first = np.unique(key, return_index=True)
    A = sp.csr_matrix((vv[first], (rr[first], cc[first])), shape=(n, n))
    A.sort_indices()
    return A


def _knn_refine(Y: np.ndarray, S: np.ndarray, r: float, rows: np.ndarray, k_take: int, metric: Metric,
                duplicates: Duplicates, nb_all: np.ndarray, dist_all: np.ndarray, block_size: int = 256) -> None:
    """Exact neighbours of ``rows`` (in place): a float64 search, then exact distances to every point that its
    error bound cannot rule out (the points within the k-th smallest float64 value plus twice the bound)."""
    n, d = S.shape
    sq = np.einsum("ij,ij->i", S, S)
    c64 = _sq_dist_tolerance(d, 2.0**-53)
    kk = min(k_take + (duplicates == "connect"), n)
    for start in range(0, len(rows), block_size):
        blk = rows[start : start + block_size]
        approx = sq[blk, None] + sq[None, :] - 2.0 * (S[blk] @ S.T)
        kth_a = np.partition(approx, kk - 1, axis=1)[:, kk - 1]
        # twice the first-order bound: no point beyond ``limit`` can be as close as the kk-th smallest
        limit = kth_a + 4.0 * c64 * (3.0 * sq[blk] + 2.0 * np.abs(kth_a)) + 1e-300
        for i, row in enumerate(blk):
            cand = np.flatnonzero(approx[i] <= limit[i])
            exact = _exact_distances(Y, np.array([row]), cand[None, :], metric)[0]
            nb, dist = _select(cand, exact, int(row), k_take, duplicates)
            nb_all[row], dist_all[row] = nb, dist


# --------------------------------------------------------------------------------------------------------------
# shortest paths
# --------------------------------------------------------------------------------------------------------------

_GRAPH: dict = {}
_FORK_LOCK = threading.Lock()


def _score_source(
    graph: sp.csr_matrix,
    Y: np.ndarray,
    codes: np.ndarray,
    metric: Metric,
    source: int,
    targets: np.ndarray,
    factor: float,
) -> tuple[np.ndarray, float]:
    """Scores of the shortest paths from ``source`` to each of ``targets`` (all reachable).

    The search is limited to ``factor`` times the largest direct distance to a target; if a target lies
    beyond, it is repeated without a limit.

    Returns
    -------
    scores : ndarray of shape (len(targets),), in [0, 1]
    ratio : float
        Largest path length to a target over the largest direct distance (to tune ``factor``).
    """
    diff = Y[targets] - Y[source]
    d2 = float(np.einsum("ij,ij->i", diff, diff).max())
    direct = d2 if metric == "cosine" else float(np.sqrt(d2))
    if metric == "cosine":
        direct *= 0.5
    direct = max(direct, 1e-12)
    dist, pred = dijkstra(graph, indices=source, return_predecessors=True, limit=direct * factor)
    if not np.isfinite(dist[targets]).all():
        dist, pred = dijkstra(graph, indices=source, return_predecessors=True)
    cls = codes[source]
    cur = targets.copy()
    interior = np.zeros(len(targets), dtype=np.int64)
    inside = np.zeros(len(targets), dtype=np.int64)
    while True:
        p = pred[cur]
        active = p != source
        if not active.any():
            break
        step = p[active]
        interior[active] += 1
        inside[active] += codes[step] == cls
        cur[active] = step
    scores = np.where(interior == 0, 1.0, inside / np.maximum(interior, 1))
    return scores, float(dist[targets].max()) / direct


def _score_chunk(chunk: list[tuple[int, np.ndarray]], g: dict | None = None) -> list[np.ndarray]:
    """Score a list of (source, targets) jobs; the search limit adapts to the path/direct ratios seen so far.

    ``g`` holds the graph and arrays; forked worker processes read them from the module-level ``_GRAPH`` that the
    parent set before forking (so nothing large is pickled).
    """
    g = _GRAPH if g is None else g
    ratios: list[float] = []
    factor = 1.5
    out = []
    for s, t in chunk:
        scores, ratio = _score_source(g["graph"], g["Y"], g["codes"], g["metric"], s, t, factor)
        out.append(scores)
        ratios.append(ratio)
        if len(ratios) % 16 == 0:
            factor = 1.05 * float(np.quantile(ratios[-256:], 0.9))
    return out


def _score_all(
    graph: sp.csr_matrix,
    Y: np.ndarray,
    codes: np.ndarray,
    metric: Metric,
    jobs: list[tuple[int, np.ndarray]],
    n_jobs: int,
    progress: bool,
) -> list[np.ndarray]:
    """Path scores for every (source, targets) job, in job order; parallel over processes when worthwhile."""
    from tqdm.auto import tqdm

    workers = (os.cpu_count() or 1) if n_jobs in (-1, None) else max(1, int(n_jobs))
    can_fork = "fork" in mp.get_all_start_methods()
    n_chunks = max(1, min(len(jobs) // 200, 64 * workers))
    bar = tqdm(total=len(jobs), desc="shortest paths", unit="src", disable=not progress, leave=False)
    g = dict(graph=graph, Y=Y, codes=codes, metric=metric)
    try:
        if workers == 1 or not can_fork or len(jobs) < 2000:
            out = []
            step = max(1, len(jobs) // 100)
            for a in range(0, len(jobs), step):
                out.extend(_score_chunk(jobs[a : a + step], g))
                bar.update(min(step, len(jobs) - a))
            return out
        bounds = np.linspace(0, len(jobs), n_chunks + 1).astype(int)
        chunks = [jobs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        out = []
        with _FORK_LOCK:  # the global is read by the forked children; one parallel run per process at a time
            _GRAPH.update(g)
            try:
                with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as ex:
                    for res in ex.map(_score_chunk, chunks):
                        out.extend(res)
                        bar.update(len(res))
            finally:
                _GRAPH.clear()
        return out
    finally:
        bar.close()


# --------------------------------------------------------------------------------------------------------------
# result and main entry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvexityResult:
    """Graph convexity of one representation.

    Attributes
    ----------
    score : float
        Mean of the class scores, in percent (the paper's layer score).
    pooled_score : float
        Mean over all sampled paths of all classes, in percent.
    class_scores : dict
        label -> class score in percent.
    path_scores : dict
        label -> ndarray of shape (m_c,), the score in [0, 1] of each sampled path, in sampling order. With the
        same data size, labels and seed, two representations sample the same pairs, so these are paired.
    pairs : dict
        label -> ndarray of shape (m_c, 2), the sampled (source, target) point indices.
    n_paths : dict
        label -> number of sampled paths.
    n_points : dict
        label -> number of points in the class.
    sem_points : dict
        label -> std of path scores (ddof=1) / sqrt(points in class), percent (the reference code's SEM).
    sem_paths : dict
        label -> std of path scores (ddof=1) / sqrt(sampled paths), percent.
    sem : float
        Standard error of ``score`` treating paths as independent: sqrt(sum_c sem_paths_c^2) / C, percent.
    unreachable_fraction : float
        Share of sampled pairs (all classes) whose points lie in different connected components (scored 0).
    unreachable : dict
        label -> number of unreachable sampled pairs.
    skipped_classes : list
        Labels with fewer than 2 points, not scored.
    baseline_score : float or None
        Score of the same graph with the labels randomly permuted (seeded), when requested.
    settings : dict
    """

    score: float
    pooled_score: float
    class_scores: dict
    path_scores: dict
    pairs: dict
    n_paths: dict
    n_points: dict
    sem_points: dict
    sem_paths: dict
    sem: float
    unreachable_fraction: float
    unreachable: dict
    skipped_classes: list
    baseline_score: float | None = None
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line: score, SEM, classes, paths, unreachable share and baseline."""
        base = "" if self.baseline_score is None else f", permuted-label baseline {self.baseline_score:.2f}%"
        return (
            f"graph convexity {self.score:.2f}% (SEM {self.sem:.2f}, pooled {self.pooled_score:.2f}%) over "
            f"{len(self.class_scores)} classes, {sum(self.n_paths.values())} paths, "
            f"{100 * self.unreachable_fraction:.2f}% unreachable{base}"
        )


def _convexity_of_codes(
    graph: sp.csr_matrix,
    Y: np.ndarray,
    codes: np.ndarray,
    comp: np.ndarray,
    metric: Metric,
    max_paths: int,
    seed: int,
    n_jobs: int,
    progress: bool,
) -> tuple[dict, dict, dict]:
    """Sampled pairs, path scores and unreachable counts per class code (classes with >= 2 points)."""
    members = {c: np.nonzero(codes == c)[0] for c in np.unique(codes)}
    pairs: dict[int, np.ndarray] = {}
    for c, idx in members.items():
        if len(idx) < 2:
            continue
        rng = np.random.default_rng([seed, int(c)])
        local = sample_pairs(len(idx), max_paths, rng)
        pairs[c] = idx[local]
    # group reachable targets by source point
    all_pairs = np.concatenate(list(pairs.values())) if pairs else np.zeros((0, 2), np.int64)
    reach = comp[all_pairs[:, 0]] == comp[all_pairs[:, 1]]
    src = all_pairs[reach, 0]
    dst = all_pairs[reach, 1]
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    uniq, starts = np.unique(src, return_index=True)
    ends = np.append(starts[1:], len(src))
    jobs = [(int(s), np.unique(dst[a:b])) for s, a, b in zip(uniq, starts, ends)]
    results = _score_all(graph, Y, codes, metric, jobs, n_jobs, progress)
    lookup: dict[int, dict[int, float]] = {}
    for (s, t), r in zip(jobs, results):
        lookup[s] = dict(zip(t.tolist(), r.tolist()))
    scores: dict[int, np.ndarray] = {}
    unreachable: dict[int, int] = {}
    for c, pr in pairs.items():
        ok = comp[pr[:, 0]] == comp[pr[:, 1]]
        scores[c] = np.array(
            [lookup[a][b] if o else 0.0 for (a, b), o in zip(pr.tolist(), ok.tolist())], dtype=np.float64
        )
        unreachable[c] = int((~ok).sum())
    return pairs, scores, unreachable


def graph_convexity(
    X: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    *,
    n_neighbors: int = 10,
    max_paths: int = 5000,
    metric: Metric = "euclidean",
    seed: int = 42,
    duplicates: Duplicates = "drop",
    baseline: bool = False,
    n_jobs: int = -1,
    progress: bool = False,
) -> ConvexityResult:
    """Graph convexity of the classes of ``labels`` in the representation ``X`` (SPEC §4.1).

    Parameters
    ----------
    X : array_like of shape (n, d)
        One representation per point; NaN/inf raise.
    labels : sequence of length n
        Any hashable values (strings, non-contiguous integers). Classes with fewer than 2 points are skipped
        and listed in the result; at least 2 classes must remain.
    n_neighbors : int
        k of the kNN graph (the paper: 10).
    max_paths : int
        Ordered same-class pairs sampled per class without replacement (the paper: 5000).
    metric : {"euclidean", "cosine"}
        Distance for neighbours and edge weights (the paper: Euclidean; cosine is the App. A.3 variant).
    seed : int
        Seed of the pair sampling (and of the label permutation of the baseline). Same inputs and seed give
        identical numbers.
    duplicates : {"drop", "connect"}
        How exact duplicate points are treated (see the module docstring); "drop" matches the reference code.
    baseline : bool
        Also score the same graph with the labels permuted at random (seeded): the chance level of the score.
    n_jobs : int
        Processes for the shortest-path searches (-1: all cores). Small problems always run in-process.
    progress : bool
        Show a progress bar over source points.

    Returns
    -------
    ConvexityResult
    """
    X = check_finite(X)
    n = X.shape[0]
    lab = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"labels must be 1-d with one label per row of X ({n}), got shape {np.shape(lab)}")
    max_paths = check_count(max_paths, "max_paths")
    seed = check_count(seed, "seed", minimum=0)
    if not isinstance(baseline, (bool, np.bool_)):
        raise ValueError(f"baseline must be True or False, got {baseline!r}")
    n_jobs = check_jobs(n_jobs)
    codes, classes = encode_labels(lab)
    counts = np.bincount(codes, minlength=len(classes))
    skipped = [classes[c] for c in range(len(classes)) if counts[c] < 2]
    if (counts >= 2).sum() < 2:
        raise ValueError(
            f"graph convexity needs at least two classes with 2 or more points; got {int((counts >= 2).sum())} "
            f"(class sizes: {dict(zip(map(str, classes), counts.tolist()))})"
        )
    n_neighbors = _check_graph_args(n, n_neighbors, duplicates)
    # graph and direct distances in the exact frame: paths and ties as in X, weights divided by a power of two
    Y, _ = _exact_frame(X.astype(np.float64, copy=False), metric)
    graph = _knn_in_frame(Y, n_neighbors, metric, duplicates, _BLOCK_SIZE)
    if graph.nnz == 0:
        raise ValueError(
            "the kNN graph has no edges: every point's neighbours are at distance 0 (identical points, or rows "
            "that are all parallel under the cosine distance), and duplicates='drop' drops them; use a larger "
            "n_neighbors or duplicates='connect'")
    _, comp = connected_components(graph, directed=False)

    pairs, scores, unreach = _convexity_of_codes(graph, Y, codes, comp, metric, max_paths, seed, n_jobs, progress)
    label_of = {c: classes[c] for c in pairs}
    class_scores = {label_of[c]: 100.0 * float(s.mean()) for c, s in scores.items()}
    n_paths = {label_of[c]: int(len(s)) for c, s in scores.items()}

    def _sd(s: np.ndarray) -> float:
        return float(s.std(ddof=1)) if len(s) > 1 else 0.0

    sem_points = {label_of[c]: 100.0 * _sd(s) / np.sqrt(counts[c]) for c, s in scores.items()}
    sem_paths = {label_of[c]: 100.0 * _sd(s) / np.sqrt(len(s)) for c, s in scores.items()}
    pooled = np.concatenate(list(scores.values()))
    n_total = sum(n_paths.values())

    baseline_score = None
    if baseline:
        perm = np.random.default_rng([seed, 7919]).permutation(n)
        _, b_scores, _ = _convexity_of_codes(
            graph, Y, codes[perm], comp, metric, max_paths, seed, n_jobs, progress
        )
        baseline_score = 100.0 * float(np.mean([s.mean() for s in b_scores.values()]))

    return ConvexityResult(
        score=float(np.mean(list(class_scores.values()))),
        pooled_score=100.0 * float(pooled.mean()),
        class_scores=class_scores,
        path_scores={label_of[c]: s for c, s in scores.items()},
        pairs={label_of[c]: p for c, p in pairs.items()},
        n_paths=n_paths,
        n_points={label_of[c]: int(counts[c]) for c in pairs},
        sem_points=sem_points,
        sem_paths=sem_paths,
        sem=float(np.sqrt(sum(v * v for v in sem_paths.values())) / len(sem_paths)),
        unreachable_fraction=float(sum(unreach.values()) / n_total),
        unreachable={label_of[c]: u for c, u in unreach.items()},
        skipped_classes=skipped,
        baseline_score=baseline_score,
        settings={
            "n_neighbors": int(n_neighbors),
            "max_paths": int(max_paths),
            "metric": metric,
            "seed": int(seed),
            "duplicates": duplicates,
            "n_points": int(n),
            "n_classes": len(class_scores),
        },
    )


def __getattr__(name: str):
    """Lazy re-export of :func:`convexlib.euclidean.euclidean_convexity` (keeps this module free of torch)."""
    if name == "euclidean_convexity":
        from .euclidean import euclidean_convexity

        return euclidean_convexity
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
