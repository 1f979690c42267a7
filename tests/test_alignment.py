"""Odd-one-out accuracy and noise ceilings: hand cases, ties, similarity modes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from convexlib.alignment import noise_ceiling, odd_one_out_accuracy, similarity_matrix, standardize


def test_hand_case_dot_product():
    # items 0 and 1 are close, 2 is far: the human odd one out (col 2) is item 2 in the first triplet
    X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.95]])
    T = np.array([[0, 1, 2], [0, 2, 1], [2, 3, 0]])
    r = odd_one_out_accuracy(X, T, similarity="dot", center=False)
    # triplet 0: pair (0,1) most similar -> odd = position 2 -> correct
    # triplet 1: items (0,2,1): pairs 0-2: 0, 0-1: .9, 2-1: .1 -> pair kept = positions (0,2) -> odd = position 1
    # triplet 2: items (2,3,0): 2-3: .95, 2-0: 0, 3-0: .1 -> odd = position 2 -> correct
    np.testing.assert_array_equal(r.predictions, [2, 1, 2])
    np.testing.assert_array_equal(r.correct, [True, False, True])
    assert r.accuracy == pytest.approx(2 / 3)


def test_ties_count_as_wrong():
    X = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # all three identical -> all similarities tie -> prediction -1
    r = odd_one_out_accuracy(X, np.array([[0, 1, 2]]), similarity="dot", center=False)
    assert r.predictions.tolist() == [-1] and r.accuracy == 0.0
    # two pairs tie at the top: (0,1)=1 and (0,2)... use items 0,3 and a vector equidistant
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # dot: 0-1: 0, 0-2: 1, 1-2: 1 -> tie at the top -> wrong even though the human pair is one of them
    r2 = odd_one_out_accuracy(Y, np.array([[0, 2, 1]]), similarity="dot", center=False)
    assert r2.predictions.tolist() == [-1] and not r2.correct[0]


def test_three_similarity_modes_disagree_where_they_should():
    # a long vector and a short vector in the same direction, and a vector in between at another angle
    X = np.array([[10.0, 0.0], [1.0, 0.0], [3.0, 3.0]])
    T = np.array([[0, 1, 2]])  # humans: 0 and 1 belong together
    cos = odd_one_out_accuracy(X, T, similarity="cosine", center=False)
    dot = odd_one_out_accuracy(X, T, similarity="dot", center=False)
    euc = odd_one_out_accuracy(X, T, similarity="euclidean", center=False)
    assert cos.correct[0]  # same direction -> cosine 1
    # dot: 0-1: 10, 0-2: 30, 1-2: 3 -> keeps (0, 2) -> odd = position 1
    assert dot.predictions[0] == 1
    # euclidean: |0-1| = 9, |0-2| = 7.6, |1-2| = 3.6 -> keeps (1, 2) -> odd = position 0
    assert euc.predictions[0] == 0


def test_centering_changes_cosine_and_scalar_scale_does_not():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6)) + 3.0
    T = np.array([rng.choice(50, 3, replace=False) for _ in range(400)])
    raw = odd_one_out_accuracy(X, T, center=False)
    centred = odd_one_out_accuracy(X, T, center=True)
    scaled = odd_one_out_accuracy(X, T, center=True, scale="scalar")
    assert not np.array_equal(raw.predictions, centred.predictions)
    np.testing.assert_array_equal(centred.predictions, scaled.predictions)
    np.testing.assert_allclose(standardize(X, scale="dim").std(axis=0), 1.0)


def test_vectorised_matches_loop():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 5))
    T = np.array([rng.choice(30, 3, replace=False) for _ in range(300)])
    r = odd_one_out_accuracy(X, T, similarity="cosine", center=True)
    Z = X - X.mean(0)
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    expected = []
    for a, b, c in T:
        s = [Z[a] @ Z[b], Z[a] @ Z[c], Z[b] @ Z[c]]
        expected.append(s[0] > s[1] and s[0] > s[2])
    np.testing.assert_array_equal(r.correct, expected)


def test_similarity_matrix_euclidean_is_negative_distance():
    X = np.array([[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(similarity_matrix(X, "euclidean"), [[0, -5], [-5, 0]])


def test_noise_ceiling_hand_case():
    # triplet {0,1,2} judged 4 times: odd ones 2, 2, 2, 0 -> majority 2
    # triplet {3,4,5} judged twice: odd ones 5 and 3 -> tied majority
    T = np.array([[0, 1, 2], [1, 0, 2], [0, 1, 2], [1, 2, 0], [3, 4, 5], [4, 5, 3]])
    nc = noise_ceiling(T)
    # with self: 3 agree, 1 not; tied pair: each 1/2
    assert nc.majority == pytest.approx((3 + 0 + 0.5 + 0.5) / 6)
    # leave-one-out: for a "2" vote the others are (2,2,0) -> agree; for the "0" vote others (2,2,2) -> 0
    # for the tied triplet each other's single vote disagrees -> 0
    assert nc.leave_one_out == pytest.approx(3 / 6)
    assert nc.n_triplets == 2 and nc.n_judgements == 6


@pytest.mark.parametrize(
    "T, match",
    [
        (np.array([[0, 1]]), r"\(N, 3\)"),
        (np.array([[0.0, 1.0, 2.0]]), "integers"),
        (np.array([[0, 1, 5]]), "out of range.*row 0"),
        (np.array([[0, 1, 2], [0, -1, 2]]), "negative.*row 1"),
        (np.array([[0, 1, 1]]), "repeats"),
        (np.zeros((0, 3), dtype=int), "empty"),
    ],
)
def test_bad_triplets(T, match):
    X = np.eye(4)
    with pytest.raises(ValueError, match=match):
        odd_one_out_accuracy(X, T)


_MODES = [("cosine", True), ("dot", False), ("euclidean", True), ("euclidean", False)]


@pytest.mark.parametrize(
    "similarity, center, offset, factor",
    [(*m, 0.0, f) for m in _MODES for f in (1e200, 1e-200)]
    # an offset changes the dot product itself; only the translation-invariant modes must ignore it
    + [(*m, 1e8, 1.0) for m in _MODES if m[0] != "dot"],
)
def test_oooa_invariant_to_extreme_scale_and_offset(similarity, center, offset, factor):
    # the predictions must not depend on the units of X: products of 1e200 overflow, of 1e-200 underflow, and a far
    # origin costs the digits of a Euclidean distance
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 16))
    T = np.stack([rng.choice(60, 3, replace=False) for _ in range(400)])
    base = odd_one_out_accuracy(X, T, similarity=similarity, center=center)
    moved = odd_one_out_accuracy((X + offset) * factor, T, similarity=similarity, center=center)
    assert (moved.predictions == base.predictions).all()
    assert 0.2 < base.accuracy < 0.5


def test_bad_representations():
    T = np.array([[0, 1, 2]])
    with pytest.raises(ValueError, match="NaN"):
        odd_one_out_accuracy(np.array([[0.0, np.nan], [1, 0], [0, 1]]), T)
    with pytest.raises(ValueError, match="zero vectors"):
        odd_one_out_accuracy(np.array([[0.0, 0.0], [1, 0], [0, 1]]), T, center=False)
    with pytest.raises(ValueError, match="similarity"):
        odd_one_out_accuracy(np.eye(3), T, similarity="manhattan")


def test_real_human_judgements(data_root):
    """The VICE embedding on the remapped human judgements: 63.6 % (dot, no centring); ceiling 67.2 / 64.4 %."""
    raw = np.loadtxt(data_root / "vice" / "test_triplets.csv", dtype=np.int64)
    idx, pos = raw[:, :3] - 1, raw[:, 3] - 1
    rows = np.arange(len(raw))
    keep = np.array([[j for j in range(3) if j != p] for p in pos])
    t = np.column_stack([idx[rows, keep[:, 0]], idx[rows, keep[:, 1]], idx[rows, pos]])
    sortindex = np.loadtxt(data_root / "vice" / "sortindex.txt", dtype=np.int64)
    t = np.argsort(sortindex)[t]
    E = np.load(data_root / "vice" / "final_embedding.npy")[sortindex]
    assert odd_one_out_accuracy(E, t, similarity="dot", center=False).accuracy == pytest.approx(0.6357, abs=5e-4)
    nc = noise_ceiling(t)
    assert nc.majority == pytest.approx(0.672, abs=5e-4)
    assert nc.leave_one_out == pytest.approx(0.644, abs=5e-4)
    assert nc.n_triplets == 1000


def test_oooa_speed_on_large_triplet_set():
    """4.7 M triplets over 1,854 items in well under a few seconds (the benchmark target is 1 s)."""
    import time

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1854, 64))
    T = rng.integers(0, 1854, size=(1_000_000, 3))
    T = T[(T[:, 0] != T[:, 1]) & (T[:, 0] != T[:, 2]) & (T[:, 1] != T[:, 2])]
    t0 = time.perf_counter()
    r = odd_one_out_accuracy(X, T)
    assert time.perf_counter() - t0 < 5.0
    assert 0.30 < r.accuracy < 0.37  # random triplets: chance
