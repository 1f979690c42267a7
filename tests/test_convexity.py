"""Graph convexity: parity with the reference package, invariances, hand-built cases, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from convexlib.convexity import graph_convexity, knn_graph, sample_pairs

ALL = 10**9  # max_paths large enough to enumerate every ordered pair


def _blobs(seed: int, n: int = 240, c: int = 4, d: int = 12, sep: float = 0.8):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    X = rng.normal(size=(n, d))
    X[:, 0] += sep * labels
    X[:, 1] += sep * (labels % 2)
    return X, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_nnconvexity(seed):
    nng = pytest.importorskip("nnconvexity.graph")
    X, labels = _blobs(seed, n=200 + 40 * seed, c=3 + seed)
    ours = graph_convexity(X, labels, max_paths=ALL)
    ref_mean, ref_class = nng.compute_graph_convexity(X, labels, n_neighbors=10, max_n_paths=ALL)
    assert set(ref_class) == set(ours.class_scores)
    for c, v in ref_class.items():
        assert abs(ours.class_scores[int(c)] - float(v)) <= 0.01  # the reference rounds to 2 decimals
    assert abs(ours.pooled_score - ref_mean) <= 0.01
    # the reference scores cover non-trivial values, so the comparison is informative
    assert 5 < min(ours.class_scores.values()) < max(ours.class_scores.values()) < 99


def test_parity_with_nnconvexity_other_k():
    nng = pytest.importorskip("nnconvexity.graph")
    X, labels = _blobs(7, n=150, c=3)
    ours = graph_convexity(X, labels, n_neighbors=5, max_paths=ALL)
    _, ref_class = nng.compute_graph_convexity(X, labels, n_neighbors=5, max_n_paths=ALL)
    for c, v in ref_class.items():
        assert abs(ours.class_scores[int(c)] - float(v)) <= 0.01


def test_invariance_rotation_translation_scaling():
    X, labels = _blobs(3)
    base = graph_convexity(X, labels, max_paths=500, seed=5)
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(X.shape[1], X.shape[1])))
    moved = 3.7 * (X @ Q) + rng.normal(size=X.shape[1]) * 10
    other = graph_convexity(moved, labels, max_paths=500, seed=5)
    assert other.class_scores == pytest.approx(base.class_scores, abs=1e-9)
    assert other.score == pytest.approx(base.score, abs=1e-9)


@pytest.mark.parametrize("offset, factor", [(1e4, 1.0), (1e6, 1.0), (0.0, 1e20), (0.0, 1e-40), (0.0, 1e300),
                                           (0.0, 1e-300)])
def test_invariance_at_extreme_offset_and_scale(offset, factor):
    # a float32 neighbour search on raw coordinates loses the digits that tell neighbours apart under a large
    # offset, and overflows/underflows at extreme scales; the graph must be the same as for the plain data
    X, labels = _blobs(4, n=200)
    base = graph_convexity(X, labels, max_paths=300, seed=1)
    ref = knn_graph(X, 10)
    moved = (X + offset) * factor
    assert (knn_graph(moved, 10) != 0).toarray().tolist() == (ref != 0).toarray().tolist()
    assert graph_convexity(moved, labels, max_paths=300, seed=1).class_scores == pytest.approx(
        base.class_scores, abs=1e-9)


def test_two_separated_blobs_are_fully_convex():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(40, 5)), rng.normal(size=(40, 5)) + 50])
    labels = ["a"] * 40 + ["b"] * 40
    r = graph_convexity(X, labels, n_neighbors=5, max_paths=ALL)
    assert r.score == 100.0
    assert r.n_paths == {"a": 40 * 39, "b": 40 * 39}
    # the two blobs are two components: no sampled same-class pair is unreachable
    assert r.unreachable_fraction == 0.0


def test_class_split_by_another_class_exact_fraction():
    # points on a line: A A B A A, k = 2 -> a path graph 0-1-2-3-4 (union of 2-NN)
    # two far "C" points form their own component and make a second usable class
    X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [100.0], [101.0]])
    labels = np.array(["A", "A", "B", "A", "A", "C", "C"])
    r = graph_convexity(X, labels, n_neighbors=1, max_paths=ALL)
    # 1-NN of 0:1, 1:0 (tie with 2 -> lower index), 2:1, 3:2 (tie -> lower), 4:3 -> union = path 0-1-2-3-4
    # A-pairs (ordered, 12): (0,1),(3,4) direct -> 1 (x2 directions = 4 paths)
    # (0,3): interior 1,2 -> 1/2; (0,4): interior 1,2,3 -> 2/3; (1,3): interior 2 -> 0; (1,4): interior 2,3 -> 1/2
    expected = (4 * 1 + 2 * (0.5 + 2 / 3 + 0 + 0.5)) / 12
    assert r.class_scores["A"] == pytest.approx(100 * expected)
    assert r.class_scores["C"] == 100.0
    # class B has one point: skipped and listed
    assert r.skipped_classes == ["B"]
    assert r.score == pytest.approx((100 * expected + 100) / 2)


def test_hand_computed_graph_structure():
    X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])
    A = knn_graph(X, 1).toarray()
    expected = np.zeros((5, 5))
    for i in range(4):
        expected[i, i + 1] = expected[i + 1, i] = 1.0
    np.testing.assert_array_equal(A, expected)


def test_disconnected_class_reports_unreachable_and_scores_zero():
    rng = np.random.default_rng(1)
    # class "a" lives in two far-apart clumps, class "b" beside one of them
    a1 = rng.normal(size=(10, 3))
    a2 = rng.normal(size=(10, 3)) + 100
    b = rng.normal(size=(10, 3)) + np.array([5.0, 0, 0])
    X = np.vstack([a1, a2, b])
    labels = ["a"] * 20 + ["b"] * 10
    r = graph_convexity(X, labels, n_neighbors=3, max_paths=ALL)
    n_cross = 2 * 10 * 10  # ordered pairs across the two clumps
    assert r.unreachable["a"] == n_cross
    assert r.unreachable["b"] == 0
    assert r.unreachable_fraction == pytest.approx(n_cross / (20 * 19 + 10 * 9))
    cross = np.array([(p < 10) != (q < 10) for p, q in r.pairs["a"]])
    assert np.all(r.path_scores["a"][cross] == 0.0)


def test_relabelling_gives_same_scores():
    X, labels = _blobs(4, n=160, c=4)
    base = graph_convexity(X, labels, max_paths=300, seed=3)
    shifted = graph_convexity(X, labels + 5, max_paths=300, seed=3)
    named = graph_convexity(X, np.array([f"class_{v}" for v in labels]), max_paths=300, seed=3)
    for c in range(4):
        assert shifted.class_scores[c + 5] == base.class_scores[c]
        assert named.class_scores[f"class_{c}"] == base.class_scores[c]


def test_deterministic_and_seed_dependent():
    X, labels = _blobs(5)
    a = graph_convexity(X, labels, max_paths=200, seed=1)
    b = graph_convexity(X, labels, max_paths=200, seed=1)
    c = graph_convexity(X, labels, max_paths=200, seed=2)
    assert a.class_scores == b.class_scores
    assert all(np.array_equal(a.pairs[k], b.pairs[k]) for k in a.pairs)
    assert any(not np.array_equal(a.pairs[k], c.pairs[k]) for k in a.pairs)
    assert a.n_paths == {k: 200 for k in a.n_paths}


def test_sem_conventions():
    X, labels = _blobs(6, n=120, c=3)
    r = graph_convexity(X, labels, max_paths=400)
    for k, s in r.path_scores.items():
        sd = 100 * s.std(ddof=1)
        assert r.sem_points[k] == pytest.approx(sd / np.sqrt(r.n_points[k]))
        assert r.sem_paths[k] == pytest.approx(sd / np.sqrt(len(s)))
    assert r.sem == pytest.approx(np.sqrt(sum(v**2 for v in r.sem_paths.values())) / 3)


def test_permutation_baseline_near_chance():
    rng = np.random.default_rng(2)
    C = 5
    # one Gaussian cloud with random labels: the labels carry no geometry, so score ~ baseline ~ chance (1/C,
    # a little above because direct edges score 1)
    X = rng.normal(size=(300, 8))
    labels = rng.integers(0, C, 300)
    r = graph_convexity(X, labels, max_paths=500, baseline=True)
    assert 100 / C - 2 < r.baseline_score < 100 / C + 10
    assert abs(r.score - r.baseline_score) < 4
    # well-separated classes: the score is far above its baseline
    Xs = X + 8 * np.eye(8)[labels % 8][:, :8] * 3
    s = graph_convexity(Xs, labels, max_paths=500, baseline=True)
    assert s.score > 95 and s.baseline_score < 30


def test_cosine_metric_is_scale_invariant_per_point():
    X, labels = _blobs(8)
    X = X + 5  # keep away from the origin
    scales = np.random.default_rng(0).uniform(0.5, 3.0, size=(len(X), 1))
    a = graph_convexity(X, labels, metric="cosine", max_paths=300)
    b = graph_convexity(X * scales, labels, metric="cosine", max_paths=300)
    assert a.class_scores == pytest.approx(b.class_scores, abs=1e-9)
    e = graph_convexity(X * scales, labels, metric="euclidean", max_paths=300)
    assert e.score != pytest.approx(b.score, abs=1e-6)


def test_duplicates_drop_matches_reference_and_connect_differs():
    nng = pytest.importorskip("nnconvexity.graph")
    X, labels = _blobs(9, n=120, c=3)
    X = np.vstack([X, X[:15]])  # exact duplicates
    labels = np.concatenate([labels, labels[:15]])
    ours = graph_convexity(X, labels, max_paths=ALL)
    _, ref = nng.compute_graph_convexity(X, labels, max_n_paths=ALL)
    for c, v in ref.items():
        assert abs(ours.class_scores[int(c)] - float(v)) <= 0.01
    A = knn_graph(X, 10, duplicates="connect")
    # every duplicate pair is joined (explicit zero weight) in "connect" mode
    for i in range(15):
        assert A[i, 120 + i] == 0 and (120 + i) in A.indices[A.indptr[i] : A.indptr[i + 1]]
    dropped = knn_graph(X, 10, duplicates="drop")
    assert all((120 + i) not in dropped.indices[dropped.indptr[i] : dropped.indptr[i + 1]] for i in range(15))
    joined = graph_convexity(X, labels, max_paths=ALL, duplicates="connect")
    assert joined.score != pytest.approx(ours.score, abs=1e-6)


def test_sample_pairs_enumerates_and_samples_without_replacement():
    rng = np.random.default_rng(0)
    allp = sample_pairs(5, 100, rng)
    assert len(allp) == 20 and len({tuple(p) for p in allp}) == 20
    assert np.all(allp[:, 0] != allp[:, 1])
    some = sample_pairs(30, 100, rng)
    assert len(some) == 100 and len({tuple(p) for p in some}) == 100
    assert np.all(some[:, 0] != some[:, 1]) and some.max() < 30


def test_parallel_equals_serial():
    X, labels = _blobs(10, n=2400, c=6, d=8)
    a = graph_convexity(X, labels, max_paths=400, n_jobs=1)
    b = graph_convexity(X, labels, max_paths=400, n_jobs=2)
    assert a.class_scores == b.class_scores


@pytest.mark.parametrize(
    "X, labels, kwargs, match",
    [
        (np.array([[0.0, np.nan], [1, 1], [2, 2], [3, 3]]), [0, 0, 1, 1], {"n_neighbors": 1}, "NaN"),
        (np.array([[0.0, np.inf], [1, 1], [2, 2], [3, 3]]), [0, 0, 1, 1], {"n_neighbors": 1}, "NaN/inf"),
        (np.zeros((4, 2)) + np.arange(4)[:, None], [0, 0, 1], {"n_neighbors": 1}, "one label per row"),
        (np.arange(8.0).reshape(4, 2), [0, 0, 0, 0], {"n_neighbors": 1}, "at least two classes"),
        (np.arange(8.0).reshape(4, 2), [0, 0, 1, 1], {"n_neighbors": 4}, "smaller than the number of points"),
        (np.arange(4.0), [0, 0, 1, 1], {"n_neighbors": 1}, "2-d"),
        (np.ones((6, 3)), [0, 0, 0, 1, 1, 1], {"n_neighbors": 2}, "identical"),
        (np.zeros((6, 0)), [0, 0, 0, 1, 1, 1], {"n_neighbors": 2}, "no features"),
        (np.arange(12.0).reshape(6, 2), ["a", "a", "b", "b", None, None], {"n_neighbors": 2}, "missing"),
        (np.arange(12.0).reshape(6, 2), [0.0, 0.0, 1.0, 1.0, np.nan, np.nan], {"n_neighbors": 2}, "missing"),
        (np.arange(12.0).reshape(6, 2), pd.Series([1, 1, 2, 2, None, None], dtype="Int64"), {"n_neighbors": 2},
         "missing"),
        (np.arange(12.0).reshape(6, 2), pd.Series(["a", "a", "b", "b", None, "b"], dtype="string"),
         {"n_neighbors": 2}, "missing"),
        (np.arange(12.0).reshape(6, 2), [0, 0, 0, 1, 1, 1], {"n_neighbors": True}, "n_neighbors"),
        (np.arange(12.0).reshape(6, 2), [0, 0, 0, 1, 1, 1], {"n_neighbors": 2, "seed": -1}, "seed"),
        (np.arange(12.0).reshape(6, 2), [0, 0, 0, 1, 1, 1], {"n_neighbors": 2, "max_paths": 2.5}, "max_paths"),
        (np.arange(12.0).reshape(6, 2), [0, 0, 0, 1, 1, 1], {"n_neighbors": 2, "baseline": "no"}, "baseline"),
        (np.outer(np.arange(1.0, 7.0), [1.0, 2.0]), [0, 0, 0, 1, 1, 1], {"n_neighbors": 2, "metric": "cosine"},
         "no edges"),
        (np.arange(12.0).reshape(6, 2), [0, 0, 0, 1, 1, 1], {"n_neighbors": 2, "n_jobs": 0}, "n_jobs"),
        (np.arange(12.0).reshape(6, 2), [0, 0, 0, 1, 1, 1], {"n_neighbors": 2, "n_jobs": 1.5}, "n_jobs"),
    ],
)
def test_bad_input_raises(X, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        graph_convexity(X, labels, **kwargs)


def _brute_force_edges(X, k, metric="euclidean", duplicates="drop"):
    """Edges of the union kNN graph from all pairwise distances by differences, ties to the lower index."""
    X = np.asarray(X, dtype=np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1)[:, None]
    D = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    if metric == "cosine":
        D = 0.5 * D * D
    n = len(X)
    k_take = k + 1 if duplicates == "drop" else k
    edges = set()
    for i in range(n):
        d = D[i].copy()
        if duplicates == "connect":
            d[i] = np.inf
        for j in np.lexsort((np.arange(n), d))[:k_take]:
            if (d[j] > 0) if duplicates == "drop" else np.isfinite(d[j]):
                edges.add((min(i, j), max(i, j)))
    return edges


def _edges(A):
    A = A.tocoo()
    return {(min(i, j), max(i, j)) for i, j in zip(A.row.tolist(), A.col.tolist())}


@pytest.mark.parametrize("case", ["tight clusters", "binary ties", "binary ties connect", "cosine tight"])
def test_knn_graph_equals_brute_force_where_float32_cannot_tell(case):
    # clusters 1e4 times tighter than the whole set sit at the float32 resolution of the search; more than 16
    # points tie at the k-th distance on binary data: both need the exact fallback to match brute force
    rng = np.random.default_rng(3)
    kw = {}
    if case == "tight clusters":
        e, s = np.r_[1.0, np.zeros(7)], 1e-4
        X = np.r_[rng.normal(size=(60, 8)) * s / 2 - s * e, rng.normal(size=(60, 8)) * s / 2 + s * e,
                  rng.normal(size=(60, 8)) + 10 * e]
    elif case.startswith("binary"):
        X = rng.integers(0, 2, (200, 6)).astype(float)
        if case.endswith("connect"):
            kw["duplicates"] = "connect"
    else:
        X = rng.normal(size=(150, 5)) * 1e-5 + np.r_[1.0, 0, 0, 0, 0]
        kw["metric"] = "cosine"
    assert _edges(knn_graph(X, 10, **kw)) == _brute_force_edges(X, 10, **kw)
