"""Tests of convexlib.transform: the naive affine transform, object-wise CV, save/load, published transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convexlib import transform as tf
from convexlib.alignment import odd_one_out_accuracy, standardize
from convexlib.transform import (
    AffineTransform,
    cross_validate,
    fit_transform,
    object_folds,
    simulate_triplets,
    split_triplets,
)

FAST = dict(batch_size=512, lr=5e-2, epochs=(5, 60), patience=15, progress=False)


def _latent_problem(n=150, p=4, cond=4.0, n_triplets=12000, seed=0):
    """Latent 'human' space H, representations X = H A + 3 (A invertible), triplets drawn from H."""
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(n, p))
    q1 = np.linalg.qr(rng.normal(size=(p, p)))[0]
    q2 = np.linalg.qr(rng.normal(size=(p, p)))[0]
    A = q1 @ np.diag(np.geomspace(cond**0.5, cond**-0.5, p)) @ q2
    X = H @ A + 3.0
    t = simulate_triplets(H, np.arange(n), n_triplets, seed=seed + 1, temperature=0.5)
    return H, A, X, t


# ---------------------------------------------------------------------------------------------------------------
# folds and splits
# ---------------------------------------------------------------------------------------------------------------


def test_object_folds_partition_and_sizes():
    folds = object_folds(10, k=3, seed=42)
    held = [h for _, h in folds]
    assert [len(h) for h in held] == [4, 3, 3]  # first n % k folds get one more
    assert np.array_equal(np.sort(np.concatenate(held)), np.arange(10))
    for train, h in folds:
        assert np.intersect1d(train, h).size == 0
        assert np.array_equal(np.sort(np.concatenate([train, h])), np.arange(10))
    # deterministic in the seed, different across seeds
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, object_folds(10, 3, 42)))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, object_folds(10, 3, 7)))
    with pytest.raises(ValueError):
        object_folds(5, k=1)
    with pytest.raises(ValueError):
        object_folds(2, k=3)


def test_object_folds_match_sklearn_kfold():
    sk = pytest.importorskip("sklearn.model_selection")
    kf = sk.KFold(n_splits=3, shuffle=True, random_state=42)
    for (tr_ref, te_ref), (tr, te) in zip(kf.split(np.arange(1854)), object_folds(1854, 3, 42)):
        assert np.array_equal(tr_ref, tr) and np.array_equal(te_ref, te)


def test_split_triplets_hand_case_and_no_leakage():
    t = np.array([[0, 1, 2], [3, 4, 5], [0, 1, 5], [2, 0, 1], [5, 3, 4]])
    train, held = split_triplets(t, np.array([0, 1, 2]))
    assert train.tolist() == [[0, 1, 2], [2, 0, 1]]
    assert held.tolist() == [[3, 4, 5], [5, 3, 4]]  # [0, 1, 5] is mixed: dropped

    rng = np.random.default_rng(3)
    n = 60
    trip = np.array([rng.choice(n, 3, replace=False) for _ in range(3000)])
    for train_items, held_items in object_folds(n, 3, 42):
        tr, he = split_triplets(trip, train_items, n)
        assert np.isin(tr, train_items).all()
        assert np.isin(he, held_items).all()
        n_mixed = int((np.isin(trip, train_items).any(1) & np.isin(trip, held_items).any(1)).sum())
        assert len(tr) + len(he) + n_mixed == len(trip)


# ---------------------------------------------------------------------------------------------------------------
# simulated triplets
# ---------------------------------------------------------------------------------------------------------------


def test_simulate_triplets_choice_probabilities_and_restriction():
    # three items with pair dot products s01 = 2, s02 = 0, s12 = 0
    E = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    t = simulate_triplets(E, [0, 1, 2], 60000, seed=0)
    assert (np.sort(t, axis=1) == [0, 1, 2]).all()
    p_odd2 = float(np.mean(t[:, 2] == 2))
    expected = np.exp(2) / (np.exp(2) + 2)  # pair (0, 1) kept -> item 2 odd
    assert abs(p_odd2 - expected) < 0.01
    # temperature -> 0: the most similar pair is always kept; -> large: uniform
    assert (simulate_triplets(E, [0, 1, 2], 2000, seed=1, temperature=1e-3)[:, 2] == 2).all()
    hot = simulate_triplets(E, [0, 1, 2], 30000, seed=1, temperature=1e4)
    assert abs(np.mean(hot[:, 2] == 2) - 1 / 3) < 0.015

    rng = np.random.default_rng(0)
    V = rng.random((50, 5))
    items = np.arange(10, 30)
    s = simulate_triplets(V, items, 5000, seed=2)
    assert np.isin(s, items).all()
    assert (s[:, 0] != s[:, 1]).all() and (s[:, 0] != s[:, 2]).all() and (s[:, 1] != s[:, 2]).all()
    assert np.array_equal(s, simulate_triplets(V, items, 5000, seed=2))
    with pytest.raises(ValueError):
        simulate_triplets(V, [1, 2], 10, seed=0)


# ---------------------------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------------------------


def test_regularisers_hand_computed():
    W = torch.tensor([[1.0, 2.0], [0.0, 3.0]])
    assert float(tf._regulariser(W, 0.5, "l2")) == pytest.approx(0.5 * np.sqrt(14.0))
    assert float(tf._regulariser(W, 0.5, "l2_squared")) == pytest.approx(0.5 * 14.0)
    # W - mean(diag) I = [[-1, 2], [0, 1]] -> sum of squares 6
    assert float(tf._regulariser(W, 0.5, "eye")) == pytest.approx(3.0)


def test_mean_cross_entropy_hand_computed():
    Z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    W = torch.eye(2)
    t = torch.tensor([[0, 1, 2], [0, 2, 1]])
    # row 0: logits (1, 0, 0) target 0; row 1: logits (0, 1, 0) target 0
    l0 = np.log(np.e + 2) - 1
    l1 = np.log(np.e + 2)
    assert tf._mean_ce(Z, W, None, t, 1.0) == pytest.approx((l0 + l1) / 2)
    b = torch.tensor([1.0, 0.0])  # embeddings (2,0), (2,0), (1,1): logits row 0 = (4, 2, 2)
    assert tf._mean_ce(Z, W, b, t[:1], 1.0) == pytest.approx(np.log(np.exp(4) + 2 * np.exp(2)) - 4)


def test_fit_standardisation_and_initial_state():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * [1.0, 5.0, 0.5] + 2.0
    t = simulate_triplets(X, np.arange(40), 300, seed=0)
    T, _ = fit_transform(X, t, lam=0.1, epochs=1, lr=1e-12, device="cpu")
    assert T.mean == pytest.approx(X.mean()) and T.std == pytest.approx(X.std())
    # a vanishing lr leaves the initialisation W = 1e-3 I, b = 1e-3
    assert np.allclose(T.weights, 1e-3 * np.eye(3), atol=1e-9) and np.allclose(T.bias, 1e-3, atol=1e-9)
    Td, _ = fit_transform(X, t, scale="dim", epochs=1, lr=1e-12, device="cpu")
    assert np.allclose(Td.standardize(X), standardize(X, center=True, scale="dim"))
    Tn, _ = fit_transform(X, t, bias=False, epochs=1, device="cpu")
    assert Tn.bias is None


def test_fit_is_deterministic_for_a_seed():
    _, _, X, t = _latent_problem(n=60, p=3, n_triplets=2000)
    a, ha = fit_transform(X, t[:1500], t[1500:], seed=5, device="cpu", **FAST)
    b, hb = fit_transform(X, t[:1500], t[1500:], seed=5, device="cpu", **FAST)
    c, _ = fit_transform(X, t[:1500], t[1500:], seed=6, device="cpu", **FAST)
    assert np.array_equal(a.weights, b.weights) and np.array_equal(a.bias, b.bias)
    assert ha.val_loss == hb.val_loss
    assert not np.array_equal(a.weights, c.weights)


def test_early_stopping_respects_min_epochs_and_patience():
    _, _, X, t = _latent_problem(n=60, p=3, n_triplets=2000)
    # a vanishing lr: the validation loss never improves by min_delta after epoch 0
    _, h = fit_transform(X, t[:1500], t[1500:], lr=1e-12, epochs=(15, 100), patience=3, device="cpu",
                         batch_size=512)
    assert h.epochs == 15 and h.stopped_early  # patience reached at epoch 4, but min_epochs holds it to 15
    _, h2 = fit_transform(X, t[:1500], t[1500:], lr=1e-12, epochs=(2, 100), patience=3, device="cpu",
                          batch_size=512)
    assert h2.epochs == 4
    # restore_best returns the weights of the epoch with the lowest validation loss
    _, h4 = fit_transform(X, t[:1500], t[1500:], lr=5e-2, epochs=(12, 12), batch_size=512, restore_best=True,
                          device="cpu")
    assert h4.final_val_loss == pytest.approx(min(h4.val_loss), rel=1e-6)
    # linear schedule: lr/3 -> lr over max_epochs, stepped per epoch
    _, h3 = fit_transform(X, t[:1500], None, lr=3e-3, epochs=(4, 4), device="cpu", batch_size=512)
    assert np.allclose(h3.lr, [1e-3, 1.5e-3, 2e-3, 2.5e-3]) and h3.val_loss == [] and h3.epochs == 4


def test_synthetic_ground_truth_is_recovered():
    """X = H A + c with A invertible, triplets from H: held-out OOOA after ~ the latent space's own accuracy."""
    H, _, X, t = _latent_problem()
    res = cross_validate(X, t, lambdas=(1e-3,), device="cpu", **FAST)
    latent = []
    for f, (train_items, held) in enumerate(object_folds(len(X), 3, 42)):
        _, ev = split_triplets(t, train_items)
        assert res.n_eval[f] == len(ev)
        latent.append(odd_one_out_accuracy(H, ev, similarity="dot", center=False).accuracy)
    latent_acc = float(np.mean(latent))
    assert latent_acc > 0.8
    assert res.oooa_before_mean < latent_acc - 0.1  # the zero-shot rule on X is clearly worse
    assert abs(res.oooa_after_mean - latent_acc) < 0.03
    # "before" is the metric core's zero-shot rule on the same held-out triplets
    before0 = odd_one_out_accuracy(X, split_triplets(t, object_folds(len(X), 3, 42)[0][0])[1])
    assert res.oooa_before[0] == pytest.approx(before0.accuracy)
    assert res.oooa_orig == pytest.approx(odd_one_out_accuracy(X, t).accuracy)
    assert len(res.correct_before) == len(res.correct_after) == res.n_eval.sum()
    assert res.summary()["oooa_delta"] == pytest.approx(100 * (res.oooa_after_mean - res.oooa_before_mean))


def test_cross_validate_lambda_choice_vice_source_and_cache(tmp_path, monkeypatch):
    H, _, X, t = _latent_problem(n=90, p=3, n_triplets=4000)
    kw = dict(lambdas=(1e-3, 1e3), device="cpu", **FAST)
    res = cross_validate(X, t, **kw)
    # a huge penalty on ||W||_F cannot fit: higher validation loss, not chosen
    assert res.chosen_lambda == 1e-3
    assert res.mean_val_loss()[1e3] > res.mean_val_loss()[1e-3]
    assert res.transform.meta["fold"] == 2 and res.transform.meta["lam"] == 1e-3  # gLocal: last fold's model

    # simulated training set: n_train is the simulated size, the evaluation is still the real held-out triplets;
    # no object leaks: each fold trains only on its training objects and validates only on its held-out ones
    seen = []
    real_fit = tf.fit_transform

    def spy(X_, tr, va, **kw):
        seen.append((tr, va))
        return real_fit(X_, tr, va, **kw)

    monkeypatch.setattr(tf, "fit_transform", spy)
    sim = cross_validate(X, t, train_source="vice", vice_embedding=H, n_simulated=3000, n_simulated_val=500,
                         lambdas=(1e-3,), device="cpu", **FAST)
    monkeypatch.setattr(tf, "fit_transform", real_fit)
    for (tr, va), (train_items, held) in zip(seen, object_folds(len(X), 3, 42)):
        assert np.isin(tr, train_items).all() and np.isin(va, held).all()
    assert sim.n_train.tolist() == [3000] * 3 and sim.n_val.tolist() == [500] * 3
    assert np.array_equal(sim.n_eval, res.n_eval)
    assert np.array_equal(sim.oooa_before, res.oooa_before)
    assert sim.oooa_after_mean > sim.oooa_before_mean + 0.05
    with pytest.raises(ValueError, match="vice_embedding"):
        cross_validate(X, t, train_source="vice", progress=False)

    # cache: the second call loads the result and does not fit
    c1 = cross_validate(X, t, lambdas=(1e-3,), cache=tmp_path, device="cpu", **FAST)
    assert not c1.from_cache and len(list(tmp_path.glob("*.npz"))) == 1
    assert isinstance(c1.transform.mean, float)

    def boom(*a, **k):
        raise AssertionError("refitted although cached")

    monkeypatch.setattr(tf, "fit_transform", boom)
    c2 = cross_validate(X, t, lambdas=(1e-3,), cache=tmp_path, device="cpu", **FAST)
    assert c2.from_cache and isinstance(c2.transform.mean, float)
    assert np.array_equal(c2.transform.weights, c1.transform.weights)
    assert np.array_equal(c2.oooa_after[1e-3], c1.oooa_after[1e-3])
    assert np.array_equal(c2.correct_after, c1.correct_after) and c2.oooa_orig == c1.oooa_orig
    with pytest.raises(AssertionError, match="refitted"):  # another setting is another key
        cross_validate(X, t, lambdas=(1e-2,), cache=tmp_path, device="cpu", **FAST)


def test_final_refit_and_input_errors():
    _, _, X, t = _latent_problem(n=60, p=3, n_triplets=2000)
    res = cross_validate(X, t, lambdas=(1e-3,), final="refit", device="cpu", **FAST)
    assert res.transform.meta["refit"] is True and res.transform.meta["fold"] is None
    n_ep = int(round(res.epochs[1e-3].mean()))
    assert res.transform.meta["epochs_run"] == n_ep and res.transform.meta["n_train_triplets"] == len(t)
    with pytest.raises(ValueError, match="lambdas"):
        cross_validate(X, t, lambdas=(), progress=False)
    with pytest.raises(TypeError, match="unknown fit"):
        cross_validate(X, t, lambdas=(1e-3,), progress=False, learning_rate=1.0)
    with pytest.raises(ValueError, match="3"):
        fit_transform(X, t[:, :2])
    with pytest.raises(ValueError, match="out of range"):
        fit_transform(X[:10], t)
    with pytest.raises(ValueError, match="NaN"):
        fit_transform(np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), t)


# ---------------------------------------------------------------------------------------------------------------
# save / load / apply
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_dim,with_bias", [(False, True), (True, True), (False, False)])
def test_save_load_round_trip(tmp_path, per_dim, with_bias):
    rng = np.random.default_rng(1)
    d = 5
    T = AffineTransform(
        weights=rng.normal(size=(d, d)).astype(np.float32),
        bias=rng.normal(size=d).astype(np.float32) if with_bias else None,
        mean=rng.normal(size=d) if per_dim else 0.25,
        std=rng.random(d) + 0.5 if per_dim else 2.0,
        meta={"lam": 0.001, "fold": 2},
    )
    path = T.save(tmp_path / "t.npz")
    U = AffineTransform.load(path)
    assert np.array_equal(U.weights, T.weights) and U.weights.dtype == np.float32
    assert (U.bias is None) == (not with_bias)
    if with_bias:
        assert np.array_equal(U.bias, T.bias)
    assert np.array_equal(np.asarray(U.mean), np.asarray(T.mean))
    assert U.meta["lam"] == 0.001 and U.meta["fold"] == 2
    X = rng.normal(size=(7, d))
    expected = ((X - np.asarray(T.mean)) / np.asarray(T.std)) @ T.weights.astype(np.float64)
    if with_bias:
        expected = expected + T.bias
    assert np.allclose(U.apply(X), expected, rtol=1e-12, atol=1e-12)
    with np.load(path) as npz:  # the published layout
        assert {"weights", "mean", "std"} <= set(npz.files)
    with pytest.raises(ValueError, match="features"):
        U.apply(rng.normal(size=(3, d + 1)))


def test_transform_validation():
    with pytest.raises(ValueError, match="square"):
        AffineTransform(np.zeros((2, 3)), None, 0.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        AffineTransform(np.eye(2), None, 0.0, 0.0)
    with pytest.raises(ValueError, match="shape"):
        AffineTransform(np.eye(2), np.zeros(3), 0.0, 1.0)


def test_published_glocal_transforms_load_and_apply(data_root, tmp_path):
    with pytest.warns(UserWarning, match="byte-identical"):
        published = tf.load_published_transforms(data_root)
    assert len(published) == 9
    groups = tf.duplicate_files(tf.published_transform_paths(data_root))
    assert groups == [["dino-vit-base-p16/norm", "dinov2-vit-base-p14/norm"]]
    assert published["dino-vit-base-p16/norm"].meta["duplicate_of"] == ["dinov2-vit-base-p14/norm"]
    assert published["clip_ViT-L/14/visual"].bias is None
    rng = np.random.default_rng(0)
    for name, T in published.items():
        with np.load(T.meta["source_file"]) as npz:
            W, mean, std = npz["weights"], npz["mean"], npz["std"]
            b = npz["bias"] if "bias" in npz.files else None
        assert np.ndim(mean) == 0 and np.ndim(std) == 0  # scalar standardisation in all published files
        X = rng.normal(size=(4, W.shape[0])) * 3 + 1
        ref = ((X - mean) / std) @ W.astype(np.float64)
        if b is not None:
            ref = ref + b
        assert np.allclose(T.apply(X), ref, rtol=1e-6, atol=1e-6), name
    # a published transform survives our save/load unchanged
    T = published["resnet18/avgpool"]
    U = AffineTransform.load(T.save(tmp_path / "r.npz"))
    X = rng.normal(size=(3, T.dim))
    assert np.array_equal(U.apply(X), T.apply(X))


# ---------------------------------------------------------------------------------------------------------------
# convexity before / after
# ---------------------------------------------------------------------------------------------------------------


def test_convexity_before_after():
    rng = np.random.default_rng(0)
    n_per, k = 25, 3
    labels = np.repeat(np.arange(k), n_per)
    centres = np.array([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])
    # two class-informative dimensions, dwarfed by eight dimensions of noise
    X = np.hstack([centres[labels] + rng.normal(size=(k * n_per, 2)), 8 * rng.normal(size=(k * n_per, 8))])
    ident = AffineTransform(np.eye(10), None, 0.0, 1.0)
    kw = dict(n_neighbors=5, max_paths=200, n_jobs=1, n_boot=300)
    same = tf.convexity_before_after(ident, X, labels, **kw)
    assert same["convexity_delta"] == pytest.approx(0.0, abs=1e-12)
    assert same["convexity_delta_ci_low"] == pytest.approx(0.0)
    assert same["convexity_delta_ci_high"] == pytest.approx(0.0)
    assert same["n_paths"] == 3 * 200
    # a transform that suppresses the noise dimensions makes the classes convex
    W = np.diag([1.0, 1.0] + [1e-3] * 8)
    row = tf.convexity_before_after(AffineTransform(W, np.zeros(10), 0.0, 1.0), X, labels, **kw)
    assert row["convexity_transf"] > row["convexity_orig"] + 20
    assert 0 < row["convexity_delta_ci_low"] <= row["convexity_delta"] <= row["convexity_delta_ci_high"]
    assert row["convexity_orig"] == pytest.approx(same["convexity_orig"])

    H, _, Xt, t = _latent_problem(n=60, p=3, n_triplets=2000)
    cv = cross_validate(Xt, t, lambdas=(1e-3,), device="cpu", **FAST)
    table = tf.table_row("toy", 12, cv, row)
    assert table["oooa_delta"] == pytest.approx(table["oooa_transf"] - table["oooa_heldout_before"])
    assert table["convexity_delta"] == row["convexity_delta"] and "before" not in table


def test_concurrent_fits_equal_serial_fits():
    """n_jobs=2 runs the (lambda, fold) fits in threads: every fit and the chosen model are those of the serial run."""
    _, _, X, t = _latent_problem(n=90, p=3, n_triplets=3000)
    kw = dict(lambdas=(1e-3, 1e-1), device="cpu", num_threads=1, **FAST)
    threads = torch.get_num_threads()
    serial = cross_validate(X, t, n_jobs=1, **kw)
    threaded = cross_validate(X, t, n_jobs=2, **kw)
    assert torch.get_num_threads() == threads  # the caller's thread count is restored
    assert threaded.chosen_lambda == serial.chosen_lambda
    np.testing.assert_array_equal(threaded.transform.weights, serial.transform.weights)
    np.testing.assert_array_equal(threaded.correct_after, serial.correct_after)
    for lam in kw["lambdas"]:
        np.testing.assert_array_equal(threaded.val_loss[lam], serial.val_loss[lam])
    with pytest.raises(ValueError, match="n_jobs"):
        cross_validate(X, t, n_jobs=0, **kw)


@pytest.mark.parametrize("kwargs, match", [
    ({"lam": "a"}, "lam"), ({"lam": None}, "lam"), ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"), ({"epochs": 2.7}, "epochs"), ({"epochs": "3"}, "epochs"),
    ({"seed": 1.5}, "seed"), ({"grad_clip": -1.0}, "grad_clip"), ({"device": "tpu"}, "device"),
])
def test_fit_transform_rejects_bad_settings_by_name(kwargs, match):
    _, _, X, t = _latent_problem(n=30, p=2, n_triplets=200)
    with pytest.raises(ValueError, match=match):
        fit_transform(X, t, None, **{"epochs": (1, 1), **kwargs})


def test_split_triplets_rejects_items_that_are_not_indices():
    t = np.array([[0, 1, 2], [3, 4, 5]])
    with pytest.raises(ValueError, match="train_items"):
        split_triplets(t, [-1], 6)
    with pytest.raises(ValueError, match="train_items"):
        split_triplets(t, [1.7], 6)


def test_load_reports_broken_files_by_name(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="junk.npz: cannot be read as a transform"):
        AffineTransform.load(tmp_path / "junk.npz")
    np.save(tmp_path / "array.npy", np.eye(2))
    with pytest.raises(ValueError, match="single .npy array"):
        AffineTransform.load(tmp_path / "array.npy")
    np.savez(tmp_path / "meta.npz", weights=np.eye(2), mean=np.zeros(1), std=np.ones(1), meta=np.asarray("[1, 2]"))
    with pytest.raises(ValueError, match="JSON object"):
        AffineTransform.load(tmp_path / "meta.npz")
