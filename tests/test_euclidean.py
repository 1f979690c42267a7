"""Tests of Euclidean convexity (convexlib.euclidean): forward from a layer, classifiers, sampling, parity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from convexlib import euclidean as E
from convexlib.models import load_model

TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=32,
            patch_size=8)


@pytest.fixture(scope="module")
def tiny_vit():
    return load_model("tiny-vit")


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _hidden(module, x):
    with torch.inference_mode():
        return module(pixel_values=x, output_hidden_states=True)


# ------------------------------------------------------------------------------------------------------------------
# segments and pairs
# ------------------------------------------------------------------------------------------------------------------


def test_lambdas_exclude_endpoints_and_match_reference_formula():
    lam = E.segment_lambdas(10)
    assert lam.shape == (10,)
    np.testing.assert_allclose(lam, np.arange(1, 11) / 11, rtol=0, atol=1e-15)
    assert lam[0] > 0 and lam[-1] < 1
    # the reference forms (i + 1) * (1 / 11): bit-identical here
    assert lam.tolist() == [(i + 1) * (1 / 11) for i in range(10)]
    with pytest.raises(ValueError):
        E.segment_lambdas(0)


def test_interpolate_segment_values():
    x1 = torch.ones(2, 3)
    x2 = torch.zeros(2, 3)
    pts = E.interpolate_segment(x1, x2, [0.0, 0.25, 1.0])
    assert pts.shape == (3, 2, 3)
    assert pts[0].eq(0).all() and pts[2].eq(1).all()
    torch.testing.assert_close(pts[1], torch.full((2, 3), 0.25))


def test_sample_unordered_pairs_all_and_subset():
    rng = np.random.default_rng(0)
    allp = E.sample_unordered_pairs(5, 100, rng)
    assert allp.tolist() == [list(p) for p in itertools.combinations(range(5), 2)]
    sub = E.sample_unordered_pairs(30, 50, np.random.default_rng(1))
    assert sub.shape == (50, 2)
    assert (sub[:, 0] < sub[:, 1]).all() and sub.max() < 30
    assert len({tuple(p) for p in sub.tolist()}) == 50
    # a legacy RandomState reproduces np.random.choice over itertools.combinations (the reference's draw)
    combos = list(itertools.combinations(range(9), 2))
    np.random.seed(7)
    chosen = np.random.choice(list(range(len(combos))), 10, replace=False)
    ref = [combos[i] for i in chosen]
    got = E.sample_unordered_pairs(9, 10, np.random.RandomState(7))
    assert [tuple(p) for p in got.tolist()] == ref
    with pytest.raises(ValueError):
        E.sample_unordered_pairs(1, 3, rng)


# ------------------------------------------------------------------------------------------------------------------
# forward from a layer
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-beit", "tiny-data2vec"])
def test_forward_from_every_layer_equals_full_forward(name, pixels):
    m = load_model(name)
    out = _hidden(m.module, pixels)
    if name == "tiny-vit":
        want = out.last_hidden_state[:, 0]  # ViTForImageClassification's head input
    elif name == "tiny-beit":
        want = out.pooler_output  # LayerNorm of the mean patch token (BEiT mean pooling)
    else:
        want = out.last_hidden_state[:, 1:].mean(1)  # Data2VecVisionModel is loaded without a pooler
    with torch.inference_mode():
        for layer in range(1, m.n_layers + 1):
            got = E.forward_from_layer(m, out.hidden_states[layer], layer)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        E.forward_from_layer(m, out.hidden_states[1], 0)
    readout = {"tiny-vit": "cls", "tiny-beit": "mean_patch", "tiny-data2vec": "mean_patch"}[name]
    assert E.resolve_readout(m) == readout and E.head_dim(m) == 32
    assert E.head_dim(m, "cls_mean_patch") == 64


def _perturbed(module):
    """Random position-bias tables and layer scales, so that forgetting them would change the output."""
    g = torch.Generator().manual_seed(5)
    for n, p in module.named_parameters():
        if "relative_position_bias_table" in n or "lambda_" in n:
            p.data.copy_(torch.randn(p.shape, generator=g))
    return module.eval()


HEAD_CASES = [
    ("ViTForImageClassification", "ViTConfig", {}),
    ("Dinov2ForImageClassification", "Dinov2Config", {}),
    ("BeitForImageClassification", "BeitConfig", {"use_relative_position_bias": True}),
    ("BeitForImageClassification", "BeitConfig", {"use_shared_relative_position_bias": True}),
    ("BeitForImageClassification", "BeitConfig", {"use_mean_pooling": False}),
    ("Data2VecVisionForImageClassification", "Data2VecVisionConfig", {"use_relative_position_bias": True}),
    ("Data2VecVisionForImageClassification", "Data2VecVisionConfig", {"use_shared_relative_position_bias": True}),
]


@pytest.mark.parametrize("cls_name,cfg_name,extra", HEAD_CASES)
def test_checkpoint_head_from_every_layer_equals_model_logits(cls_name, cfg_name, extra, pixels):
    import transformers

    torch.manual_seed(1)
    config = getattr(transformers, cfg_name)(**TINY, **extra, num_labels=3)
    module = _perturbed(getattr(transformers, cls_name)(config))
    head = E.head_classifier(module)
    assert head.info["kind"] == "head" and len(head.classes) == 3
    assert E.head_dim(module) == head.in_features  # the auto readout is what the checkpoint's head sees
    out = _hidden(module, pixels)
    with torch.inference_mode():
        for layer in range(1, 4):
            logits = head.logits(E.forward_from_layer(module, out.hidden_states[layer], layer))
            torch.testing.assert_close(logits, out.logits, rtol=1e-5, atol=1e-5)
        if "relative_position_bias" in str(extra):  # the bias matters: without it the logits change
            for n, p in module.named_parameters():
                if "relative_position_bias_table" in n:
                    p.data.zero_()
            assert not torch.allclose(_hidden(module, pixels).logits, out.logits, atol=1e-3)


def test_unsupported_family_raises():
    import timm

    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2)
    with pytest.raises(NotImplementedError, match="timm"):
        E.forward_from_layer(m, torch.zeros(1, 17, 192), 1)


# ------------------------------------------------------------------------------------------------------------------
# interpolation through the model
# ------------------------------------------------------------------------------------------------------------------


def test_pair_with_itself_reproduces_prediction_and_endpoints_equal_full_forward(tiny_vit, pixels):
    out = _hidden(tiny_vit.module, pixels)
    labels = np.array(["a", "b", "c"] * 4)
    last = E.forward_from_layer(tiny_vit, out.hidden_states[4], 4)
    probe = E.train_linear_probe(last.numpy(), labels, cache=False)
    full = probe.logits(out.last_hidden_state[:, 0])
    layer = 2
    s = out.hidden_states[layer]
    with torch.inference_mode():
        # λ = 1 and λ = 0 are the two end points: the forward-from-layer path equals the full forward
        ends = E.interpolate_segment(s[0], s[1], [1.0, 0.0])
        torch.testing.assert_close(probe.logits(E.forward_from_layer(tiny_vit, ends, layer)), full[[0, 1]],
                                   rtol=1e-5, atol=1e-5)
        # a pair with itself: every interior point keeps the original prediction
        for i in range(3):
            pts = E.interpolate_segment(s[i], s[i], E.segment_lambdas(10))
            logits = probe.logits(E.forward_from_layer(tiny_vit, pts, layer))
            torch.testing.assert_close(logits, full[i].expand(10, -1), rtol=1e-4, atol=1e-4)
            assert (logits.argmax(1) == full[i].argmax()).all()
    # and through euclidean_convexity: self-pairs score exactly the end point's correctness
    correct = np.array(probe.classes)[full.argmax(1).numpy()] == labels
    res = E.euclidean_convexity(tiny_vit, layer, s.numpy(), labels, classifier=probe,
                                pairs={"a": [[0, 0], [3, 3]], "b": [[1, 1]]})
    assert res.pair_scores["a"].tolist() == [float(correct[0]), float(correct[3])]
    assert res.pair_scores["b"].tolist() == [float(correct[1])]


@pytest.fixture(scope="module")
def clustered(tiny_vit):
    """24 items in 4 classes (one of a single item) and a classifier on the model's head input."""
    g = torch.Generator().manual_seed(3)
    labels = np.array(["cat"] * 8 + ["dog"] * 7 + ["emu"] * 8 + ["fox"])
    x = torch.randn(len(labels), 3, 32, 32, generator=g)
    out = _hidden(tiny_vit.module, x)
    # a random linear classifier: the end points are not all right and segments cross its regions, so pair
    # scores spread over [0, 1] (a probe fitted to this near-linear random network keeps every segment)
    rng = np.random.default_rng(0)
    probe = E.LinearClassifier(4 * rng.normal(size=(4, 32)), rng.normal(size=4), ("cat", "dog", "emu", "fox"))
    return labels, out, probe


def _one_call_per_pair(model, probe, layer, states, pairs_by_label, n_sampled=10):
    """Independent loop: one model call per pair, interpolation written out."""
    lam = [(i + 1) * (1 / (n_sampled + 1)) for i in range(n_sampled)]
    scores = {}
    for lbl, pairs in pairs_by_label.items():
        out = []
        for i, j in pairs:
            pts = torch.stack([lm * torch.from_numpy(states[i]) + (1 - lm) * torch.from_numpy(states[j]) for lm in lam])
            with torch.inference_mode():
                pred = probe.predict(E.forward_from_layer(model, pts, layer))
            out.append(float(np.mean(pred == lbl)))
        scores[lbl] = np.array(out)
    return scores


def test_batched_equals_one_call_per_pair(tiny_vit, clustered):
    labels, out, probe = clustered
    layer = 1
    S = out.hidden_states[layer].numpy()
    res = E.euclidean_convexity(tiny_vit, layer, S, labels, classifier=probe, n_pairs=8, seed=4, batch_size=7)
    assert res.skipped_classes == ["fox"]
    assert res.n_pairs == {"cat": 8, "dog": 8, "emu": 8}
    ref = _one_call_per_pair(tiny_vit, probe, layer, S, res.pairs)
    for lbl in res.pair_scores:
        np.testing.assert_array_equal(res.pair_scores[lbl], ref[lbl])
    pooled = np.concatenate(list(res.pair_scores.values()))
    assert 0.0 < pooled.mean() < 1.0, "degenerate test: all points kept or all lost their class"
    assert ((pooled > 0) & (pooled < 1)).any(), "degenerate test: no segment leaves and re-enters a class"
    assert math.isclose(res.score, np.mean([100 * ref[k].mean() for k in ref]))
    assert math.isclose(res.pooled_score, 100 * pooled.mean())
    np.testing.assert_allclose(res.lambda_profile,
                               100 * np.concatenate(list(res.point_correct.values())).mean(axis=0))
    # float16 storage gives (nearly) the same answer
    res16 = E.euclidean_convexity(tiny_vit, layer, S.astype(np.float16), labels, classifier=probe, n_pairs=8,
                                  seed=4, batch_size=64)
    assert abs(res16.score - res.score) <= 5.0
    assert res16.pairs["cat"].tolist() == res.pairs["cat"].tolist()


def test_parity_with_nnconvexity_reference(tiny_vit, clustered):
    nneu = pytest.importorskip("nnconvexity.euclidean")
    labels, out, probe = clustered
    layer = 2
    S = out.hidden_states[layer].numpy()
    keep = labels != "fox"  # the reference returns NaN for a one-item class
    S, lab = S[keep], labels[keep]
    calls = []

    def predict_from_middle(feats, layer_):
        calls.append(len(feats))
        with torch.inference_mode():
            return probe.predict(E.forward_from_layer(tiny_vit, feats, layer_))

    np.random.seed(11)
    ref_mean, ref_class = nneu.compute_euclidean_convexity(S, lab, predict_from_middle, layer, n_pairs=10,
                                                           n_sampled=10)
    assert set(calls) == {10}  # one call per pair in the reference
    res = E.euclidean_convexity(tiny_vit, layer, S, lab, classifier=probe, n_pairs=10, n_sampled=10, seed=11,
                                sampling="reference", batch_size=16)
    assert sum(res.n_pairs.values()) == len(calls)
    assert round(res.pooled_score, 2) == ref_mean
    assert {k: round(v, 2) for k, v in res.class_scores.items()} == ref_class
    assert 0 < ref_mean < 100
    # the default sampling draws other pairs, so the scores differ while the mechanics stay the same
    other = E.euclidean_convexity(tiny_vit, layer, S, lab, classifier=probe, n_pairs=10, seed=11)
    assert other.pairs["cat"].tolist() != res.pairs["cat"].tolist()


def test_labels_validation(tiny_vit, clustered):
    labels, out, probe = clustered
    S = out.hidden_states[2].numpy()
    with pytest.raises(ValueError, match="not among the classifier"):
        E.euclidean_convexity(tiny_vit, 2, S, np.array(["x"] * len(labels)), classifier=probe)
    with pytest.raises(ValueError, match="one label per item"):
        E.euclidean_convexity(tiny_vit, 2, S, labels[:-1], classifier=probe)
    with pytest.raises(ValueError, match="classification head"):
        E.euclidean_convexity(tiny_vit, 2, S, labels)
    with pytest.raises(ValueError, match="another class"):
        E.euclidean_convexity(tiny_vit, 2, S, labels, classifier=probe, pairs={"cat": [[0, 9]]})
    with pytest.raises(ValueError, match="out of range"):
        E.euclidean_convexity(tiny_vit, 5, S, labels, classifier=probe)
    with pytest.raises(ValueError, match="-d inputs"):
        E.euclidean_convexity(tiny_vit, 2, S, labels, classifier=E.LinearClassifier(
            np.zeros((4, 7)), np.zeros(4), ("cat", "dog", "emu", "fox")))


def test_integer_labels_and_head_units(pixels):
    """Integer labels compared with head unit indices (the reference's ImageNet-id convention)."""
    import transformers

    torch.manual_seed(2)
    module = _perturbed(transformers.ViTForImageClassification(transformers.ViTConfig(**TINY, num_labels=4)))
    out = _hidden(module, pixels)
    pred = out.logits.argmax(1).numpy()
    head = E.head_classifier(module, classes=range(4))
    # labels = the head's own predictions: every end point is right, so self-pairs score 1
    res = E.euclidean_convexity(module, 3, out.hidden_states[3].numpy(), pred,
                                classifier=head, pairs={int(pred[0]): [[0, 0]]})
    assert res.pair_scores[int(pred[0])].tolist() == [1.0]
    assert E.head_classifier(module).classes[0] == module.config.id2label[0]


# ------------------------------------------------------------------------------------------------------------------
# probe
# ------------------------------------------------------------------------------------------------------------------


def test_logistic_probe_matches_sklearn():
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 6)) * np.array([1, 5, 0.2, 1, 3, 1]) + 2.0
    y = (X[:, 0] + 0.3 * X[:, 1] + rng.normal(size=90) > 3).astype(int) + (X[:, 2] > 2).astype(int)
    W, b, info = E.fit_logistic(X, y, 3, C=0.5, standardize=False, tol=1e-8, max_iter=1000)
    ref = sklearn_lm.LogisticRegression(C=0.5, tol=1e-8, max_iter=2000).fit(X, y)
    np.testing.assert_allclose(W, ref.coef_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b - b.mean(), ref.intercept_ - ref.intercept_.mean(), rtol=1e-4, atol=1e-5)
    assert info["converged"]
    # standardising changes the penalty's geometry, not the prediction quality on separable structure
    Ws, bs, _ = E.fit_logistic(X, y, 3, C=0.5)
    acc = ((X @ Ws.T + bs).argmax(1) == y).mean()
    assert acc >= ((X @ W.T + b).argmax(1) == y).mean() - 0.05


def test_probe_is_cached_and_deterministic(tmp_cache):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5)).astype(np.float32)
    labels = np.array(["p", "q"] * 20)
    X[labels == "p", 0] += 3
    a = E.train_linear_probe(X, labels)
    files = list((tmp_cache / "euclidean" / "probes").glob("*.npz"))
    assert len(files) == 1
    b = E.train_linear_probe(X, labels)
    np.testing.assert_array_equal(a.weight, b.weight)
    c = E.train_linear_probe(X, labels, cache=False)
    np.testing.assert_array_equal(a.weight, c.weight)
    assert a.classes == ("p", "q") and a.info["train_accuracy"] > 0.9
    E.train_linear_probe(X, labels, C=0.1)
    assert len(list((tmp_cache / "euclidean" / "probes").glob("*.npz"))) == 2


def test_stratified_split_disjoint():
    labels = np.repeat(["a", "b", "c"], 10)
    tr, te = E.stratified_split(labels, 4, 3, seed=0)
    assert len(tr) == 12 and len(te) == 9 and not set(tr) & set(te)
    assert (np.unique(labels[tr], return_counts=True)[1] == 4).all()
    tr2, _ = E.stratified_split(labels, 4, 3, seed=0)
    assert tr.tolist() == tr2.tolist()
    with pytest.raises(ValueError):
        E.stratified_split(labels, 8, 3)


def test_token_states_and_head_features_from_image_set(tiny_vit, tmp_path, tmp_cache):
    from PIL import Image

    from convexlib.data.sets import ImageSet

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    data = ImageSet(tuple(paths), np.array(["a", "b", "a", "b", "a"]), name="rand")
    st = E.token_states(tiny_vit, data, [2, 4], batch_size=2, progress=False)
    assert st[2].shape == (5, 17, 32) and st[2].dtype == np.float32
    st16 = E.token_states(tiny_vit, data, 2, dtype=np.float16, batch_size=3, progress=False)
    np.testing.assert_allclose(st16[2], st[2], rtol=1e-2, atol=1e-2)
    hf = E.head_features(tiny_vit, data, batch_size=2, progress=False)
    with torch.inference_mode():
        want = E.forward_from_layer(tiny_vit, torch.from_numpy(st[4]), 4).numpy()
    np.testing.assert_allclose(hf, want, rtol=1e-5, atol=1e-5)
    assert len(list((tmp_cache / "euclidean" / "head_features").glob("*.npz"))) == 1
    probe = E.linear_probe(tiny_vit, data, test=data, progress=False)
    assert probe.info["test_accuracy"] == probe.info["train_accuracy"]
