"""Human triplets: the 20,000 real judgements, full-set file formats, Kriegeskorte-derived triplets."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from convexlib.alignment import noise_ceiling, odd_one_out_accuracy
from convexlib.data import (
    Triplets,
    kriegeskorte_triplets,
    load_human_test_triplets,
    load_things_triplets,
    load_vice_embedding,
    triplets_from_dissimilarity,
)
from convexlib.errors import DataNotFoundError

# ------------------------------------------------------------------------------------------------------------
# the 20,000 judgements
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def human(data_root):
    return load_human_test_triplets(data_root)


@pytest.fixture(scope="module")
def human_raw(data_root):
    return load_human_test_triplets(data_root, remap=False)


def test_counts_and_format(human, data_root):
    a = human.array
    assert isinstance(human, Triplets)
    assert a.shape == (20000, 3) and a.dtype == np.int64 and human.n_items == 1854
    assert a.min() >= 0 and a.max() <= 1853
    assert len(np.unique(np.sort(a, axis=1), axis=0)) == 1000
    assert human.judge.shape == (20000,) and len(np.unique(human.judge)) == 325
    # first file row "128 1107 734 1 272": odd one out is position 1 -> raw 127 goes last, pair keeps its order
    assert human.array[0].tolist() == [1106, 733, 127] and human.judge[0] == 272
    raw_file = np.loadtxt(data_root / "vice/test_triplets.csv", dtype=np.int64)
    chosen = raw_file[np.arange(20000), raw_file[:, 3] - 1] - 1  # the odd one out, raw, 0-based
    # no remapped object is involved in these first rows, so raw == THINGS there
    assert human.array[:3, 2].tolist() == chosen[:3].tolist()


def test_remapping_touches_594_rows(human, human_raw, data_root):
    touched = (human.array != human_raw.array).any(axis=1)
    assert int(touched.sum()) == 594
    si = np.loadtxt(data_root / "vice/sortindex.txt", dtype=np.int64)
    moved = set(np.nonzero(si != np.arange(1854))[0])
    involves_moved = np.array([bool(set(r) & moved) for r in human_raw.array])
    assert np.array_equal(involves_moved, touched)


def _reference_agreement(t: np.ndarray) -> tuple[float, float]:
    """Independent loop implementation: majority agreement (own vote included) and leave-one-out agreement,
    tied majorities counted fractionally (1/number of tied choices)."""
    votes: dict[tuple, Counter] = defaultdict(Counter)
    for row in t:
        votes[tuple(sorted(row))][row[2]] += 1
    maj, loo = [], []
    for row in t:
        c = votes[tuple(sorted(row))]
        top = max(c.values())
        winners = [k for k, v in c.items() if v == top]
        maj.append(1 / len(winners) if row[2] in winners else 0.0)
        rest = c.copy()
        rest[row[2]] -= 1
        top = max(rest.values())
        winners = [k for k, v in rest.items() if v == top]
        loo.append(1 / len(winners) if row[2] in winners else 0.0)
    return float(np.mean(maj)), float(np.mean(loo))


def test_noise_ceiling_matches_published(human):
    nc = noise_ceiling(human.array)
    assert nc.n_triplets == 1000 and nc.n_judgements == 20000
    assert nc.majority == pytest.approx(0.672, abs=5e-4)  # Hebart et al. 2020: 67.22 %
    assert nc.leave_one_out == pytest.approx(0.644, abs=5e-4)
    ref_maj, ref_loo = _reference_agreement(human.array)
    assert nc.majority == pytest.approx(ref_maj, abs=1e-12)
    assert nc.leave_one_out == pytest.approx(ref_loo, abs=1e-12)


def _dot_rule_accuracy(E: np.ndarray, t: np.ndarray) -> float:
    """Inline reference: the pair with the strictly largest dot product must be columns 0-1."""
    s01 = np.einsum("ij,ij->i", E[t[:, 0]], E[t[:, 1]])
    s02 = np.einsum("ij,ij->i", E[t[:, 0]], E[t[:, 2]])
    s12 = np.einsum("ij,ij->i", E[t[:, 1]], E[t[:, 2]])
    return float(np.mean((s01 > s02) & (s01 > s12)))


def test_vice_embedding_accuracy_end_to_end(human, data_root):
    emb = load_vice_embedding(data_root)
    res = odd_one_out_accuracy(emb, human.array, similarity="dot", center=False)
    assert res.accuracy == pytest.approx(0.6357, abs=5e-4)  # PROVENANCE: 63.57 %
    assert res.accuracy == pytest.approx(_dot_rule_accuracy(emb.astype(np.float64), human.array), abs=1e-12)
    # ignoring the odd-one-out column (taking the third listed item as odd): chance level
    raw_file = np.loadtxt(data_root / "vice/test_triplets.csv", dtype=np.int64)
    inv = np.argsort(np.loadtxt(data_root / "vice/sortindex.txt", dtype=np.int64))
    listed = inv[raw_file[:, :3] - 1]
    wrong = odd_one_out_accuracy(emb, listed, similarity="dot", center=False).accuracy
    assert 0.31 < wrong < 0.36


def test_remapping_matters_on_the_594_rows(human, human_raw, data_root):
    emb = load_vice_embedding(data_root)
    emb_raw = load_vice_embedding(data_root, things_order=False)
    touched = (human.array != human_raw.array).any(axis=1)

    def acc(E, t):
        return odd_one_out_accuracy(E, t, similarity="dot", center=False).accuracy

    assert acc(emb, human.array[touched]) == pytest.approx(0.604, abs=2e-3)  # consistent orders
    assert acc(emb_raw, human_raw.array[touched]) == pytest.approx(0.604, abs=2e-3)  # both raw: same
    assert acc(emb_raw, human.array[touched]) == pytest.approx(0.524, abs=2e-3)  # embedding not reordered
    assert acc(emb, human_raw.array[touched]) == pytest.approx(0.428, abs=2e-3)  # triplets not remapped
    # the other 19,406 rows do not care
    assert acc(emb, human.array[~touched]) == acc(emb_raw, human.array[~touched])


def _tmp_root_with(data_root: Path, tmp_path: Path, triplet_text: str) -> Path:
    root = tmp_path / "root"
    (root / "vice").mkdir(parents=True)
    (root / "vice/sortindex.txt").symlink_to(data_root / "vice/sortindex.txt")
    (root / "vice/test_triplets.csv").write_text(triplet_text)
    return root


def test_bad_rows_are_named(data_root, tmp_path):
    root = _tmp_root_with(data_root, tmp_path, "1\t2\t3\t1\t5\n4\t5\t6\t2\t5\n7\t8\t1855\t1\t5\n")
    with pytest.raises(ValueError, match=r"test_triplets\.csv: line 3: object index outside 1\.\.1854"):
        load_human_test_triplets(root)
    root2 = _tmp_root_with(data_root, tmp_path / "b", "1\t2\t3\t4\t5\n")
    with pytest.raises(ValueError, match=r"line 1: column 4 must be the odd one's position"):
        load_human_test_triplets(root2)
    root3 = _tmp_root_with(data_root, tmp_path / "c", "1\t2\t2\t1\t5\n")
    with pytest.raises(ValueError, match="repeats an item"):
        load_human_test_triplets(root3)
    with pytest.raises(ValueError, match=r"shape \(4, 3\)|int64|integer"):
        Triplets(np.zeros((4, 3)), 10, "x")


# ------------------------------------------------------------------------------------------------------------
# full THINGS triplet files (synthetic files in each documented format)
# ------------------------------------------------------------------------------------------------------------

EXPECTED = np.array([[0, 1, 2], [10, 11, 1853], [5, 7, 6]])  # pair, pair, odd (0-based)


def test_things_triplets_npy_and_txt(tmp_path):
    d = tmp_path / "things-triplets"
    d.mkdir()
    np.save(d / "train_90.npy", EXPECTED[:2])
    np.save(d / "test_10.npy", EXPECTED[2:])
    t = load_things_triplets(tmp_path)
    assert np.array_equal(t.array, EXPECTED) and t.judge is None and t.n_items == 1854
    txt = tmp_path / "trainset.txt"
    np.savetxt(txt, EXPECTED[:, [2, 0, 1]], fmt="%d")  # odd one out first
    assert np.array_equal(load_things_triplets(txt, odd_column=0).array, EXPECTED)


@pytest.mark.parametrize("kind", ["position", "item"])
def test_things_triplets_csv(tmp_path, kind):
    items = EXPECTED[:, [2, 0, 1]] + 1  # 1-based, odd one listed first
    choice = np.ones(3, dtype=int) if kind == "position" else items[:, 0]
    lines = ["image1,image2,image3,choice,subject_id"]
    lines += [f"{a},{b},{c},{ch},{s}" for (a, b, c), ch, s in zip(items, choice, [7, 8, 9])]
    f = tmp_path / "triplets_large_final_correctednc_correctedorder.csv"
    f.write_text("\n".join(lines) + "\n")
    t = load_things_triplets(f)
    assert np.array_equal(t.array, EXPECTED) and t.judge.tolist() == [7, 8, 9]
    assert t.meta["choice"] == kind


def test_things_triplets_errors(tmp_path, data_root):
    with pytest.raises(DataNotFoundError, match="f5rn6"):
        load_things_triplets(data_root)  # the shared root has no full triplet set
    f = tmp_path / "bad.npy"
    np.save(f, np.array([[0, 1, 2], [3, 4, 1854]]))
    with pytest.raises(ValueError, match=r"bad\.npy: row 1 \(0-based\): index outside 0\.\.1853"):
        load_things_triplets(f)


# ------------------------------------------------------------------------------------------------------------
# triplets derived from dissimilarities (Kriegeskorte 92, extension beyond the paper)
# ------------------------------------------------------------------------------------------------------------


def test_triplets_from_dissimilarity_hand_case():
    # items 0,1 close; 2 far; 3 equidistant from 0 and 1 at the smallest distance in {0,1,3}: a tie
    D = np.array(
        [
            [0.0, 1.0, 5.0, 1.0],
            [1.0, 0.0, 4.0, 1.0],
            [5.0, 4.0, 0.0, 6.0],
            [1.0, 1.0, 6.0, 0.0],
        ]
    )
    t, ties = triplets_from_dissimilarity(D)
    # sets: {0,1,2} -> pair 0-1, odd 2; {0,1,3}: three equal distances -> dropped;
    # {0,2,3}: d03=1 smallest -> odd 2; {1,2,3}: d13=1 -> odd 2
    assert ties == 1
    assert t.tolist() == [[0, 1, 2], [0, 3, 2], [1, 3, 2]]


def test_kriegeskorte_triplets(data_root):
    k = kriegeskorte_triplets(data_root, subjects=[0, 5])
    n_sets = 92 * 91 * 90 // 6
    assert k.n_items == 92 and len(k) == 2 * n_sets  # no ties in this data
    assert np.array_equal(np.unique(k.judge), [0, 5])
    rdm = np.load(data_root / "kriegeskorte92/rdms_behav_simjudge.npy")[5]
    rows = k.array[k.judge == 5]
    rng = np.random.default_rng(0)
    for a, b, odd in rows[rng.choice(len(rows), 200, replace=False)]:
        assert rdm[a, b] < rdm[a, odd] and rdm[a, b] < rdm[b, odd]
    with pytest.raises(ValueError, match="subjects"):
        kriegeskorte_triplets(data_root, subjects=[16])
