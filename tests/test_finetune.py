"""Tests of convexlib.finetune: Table 2 arithmetic, the concept split, the THINGS+ targets, and a tiny random BERT
fine-tuned for a few steps through the same training function as MiniLM (no download, no GPU)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from convexlib import finetune as F
from convexlib import models as M

# ---------------------------------------------------------------------------------------------------------------
# Table 2
# ---------------------------------------------------------------------------------------------------------------


def _tidy(values: dict[str, tuple[float, float]], n_layers: int = 2, label: dict | None = None,
          conv_set: str = "things-superclasses", extra_conv_set: str | None = None) -> pd.DataFrame:
    """Hand-made tidy table: model -> (last-block convexity, last-block OOOA); layer 1 gets other values."""
    rows = []
    for model, (conv, oooa) in values.items():
        for layer in range(1, n_layers + 1):
            last = layer == n_layers
            base = {"model": model, "label": (label or {}).get(model, model), "n_layers": n_layers, "layer": layer}
            rows.append({**base, "dataset": conv_set, "metric": "convexity", "value": conv if last else -1.0})
            rows.append({**base, "dataset": conv_set, "metric": "convexity_sem", "value": 0.1})
            if extra_conv_set:  # a second convexity set listed after the primary one must be ignored
                rows.append({**base, "dataset": extra_conv_set, "metric": "convexity", "value": 999.0})
            rows.append({**base, "dataset": "triplets", "metric": "oooa", "value": oooa if last else -2.0})
    return pd.DataFrame(rows)


def test_table2_hand_computed_two_pairs():
    tidy = _tidy({"a": (50.0, 40.0), "a_ft": (60.0, 38.0), "b": (20.0, 35.0), "b_ft": (50.0, 41.0)},
                 label={"a": "A base", "b": "B base"}, extra_conv_set="cifar10")
    t = F.table2(tidy, {"a": "a_ft", "b": "b_ft"})
    assert list(t.columns[:5]) == list(F.TABLE2_COLUMNS)
    assert t["model"].tolist() == ["A base", "B base", "avg", "std (ddof=1)"]
    body = t.set_index("model")
    assert body.loc["A base", "convexity orig"] == 50.0 and body.loc["A base", "convexity Δft"] == 10.0
    assert body.loc["A base", "OOOA orig"] == 40.0 and body.loc["A base", "OOOA Δft"] == -2.0
    assert body.loc["B base", "convexity Δft"] == 30.0 and body.loc["B base", "OOOA Δft"] == 6.0
    # avg of (10, 30) = 20, sample std = |30 - 10| / sqrt(2); OOOA: (-2, 6) -> 2, 8 / sqrt(2)
    assert body.loc["avg", "convexity Δft"] == pytest.approx(20.0)
    assert body.loc["std (ddof=1)", "convexity Δft"] == pytest.approx(20 / np.sqrt(2))
    assert body.loc["avg", "OOOA Δft"] == pytest.approx(2.0)
    assert body.loc["std (ddof=1)", "OOOA Δft"] == pytest.approx(8 / np.sqrt(2))
    assert body.loc["A base", "convexity_set"] == "things-superclasses"  # the primary (first-listed) set
    formatted = F.format_table2(t)
    assert formatted["model"].tolist() == ["A base", "B base", "avg ± std"]
    assert formatted.iloc[-1]["convexity Δft"] == "+20.0 ± 14.1"
    assert formatted.iloc[0]["OOOA Δft"] == "−2.0"


def test_table2_paper_values_give_the_paper_summary():
    """SPEC §5.5: the six (orig, Δft) pairs give +26.9 ± 17.3 (convexity) and +0.6 ± 6.9 (OOOA)."""
    paper = {"vit": (56.5, 16.0, 34.7, 6.6), "vit_large": (58.7, 9.6, 34.5, 10.0), "beit": (20.5, 44.3, 37.0, 1.3),
             "beit_large": (20.2, 51.5, 37.0, -0.7), "data2vec": (40.2, 26.1, 41.2, -7.4),
             "data2vec_large": (57.7, 14.1, 41.8, -6.4)}
    vals = {}
    for pre, (c, dc, o, do) in paper.items():
        vals[pre] = (c, o)
        vals[F.PAPER_PAIRS[pre]] = (c + dc, o + do)
    t = F.table2(_tidy(vals, n_layers=3))
    s = t.set_index("model")
    assert s.loc["avg", "convexity Δft"] == pytest.approx(26.933, abs=1e-3)
    assert round(s.loc["std (ddof=1)", "convexity Δft"], 1) == 17.3
    assert round(s.loc["std (ddof=1)", "OOOA Δft"], 1) == 6.9
    assert s.loc["vit", "convexity Δft"] == pytest.approx(16.0)
    assert F.format_table2(t).iloc[-1]["convexity Δft"] == "+26.9 ± 17.3"


def test_table2_single_pair_std_not_computable_and_errors():
    t = F.table2(_tidy({"minilm": (30.0, 45.0), "minilm-ft": (40.0, 44.0)}), F.OFFLINE_PAIRS)
    std = t[t["model"] == F.STD_ROW].iloc[0]
    assert np.isnan(std["convexity Δft"]) and "at least 2 pairs" in std["note"]
    assert t[t["model"] == "avg"].iloc[0]["convexity Δft"] == 10.0
    assert "n/a" in F.format_table2(t).iloc[-1]["convexity Δft"]
    with pytest.raises(ValueError, match="not in the tidy table"):
        F.table2(_tidy({"vit": (1.0, 2.0)}))
    skipped = F.table2(_tidy({"vit": (1.0, 2.0), "vit_finetuned": (3.0, 2.5)}), missing="skip")
    assert skipped["model"].tolist() == ["vit", "avg", "std (ddof=1)"] and len(skipped.attrs["skipped"]) == 5
    bad = _tidy({"a": (1.0, 2.0)})
    bad = pd.concat([bad, _tidy({"a_ft": (1.0, 2.0)}, conv_set="other")])
    with pytest.raises(ValueError, match="different convexity set"):
        F.table2(bad, {"a": "a_ft"})


def test_paper_pairs_are_registered_pretrained_finetuned_pairs():
    assert len(F.PAPER_PAIRS) == 6
    for pre, ft in F.PAPER_PAIRS.items():
        a, b = M.REGISTRY[pre], M.REGISTRY[ft]
        assert (a.variant, b.variant) == ("pretrained", "finetuned")
        assert (a.family, a.size, a.n_layers) == (b.family, b.size, b.n_layers)


# ---------------------------------------------------------------------------------------------------------------
# Split and targets
# ---------------------------------------------------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_complete():
    tr, ev = F.split_concepts(1854, seed=42)
    tr2, ev2 = F.split_concepts(1854, seed=42)
    assert np.array_equal(tr, tr2) and np.array_equal(ev, ev2)
    assert len(tr) == 927 and len(ev) == 927
    assert np.intersect1d(tr, ev).size == 0
    assert np.array_equal(np.union1d(tr, ev), np.arange(1854))
    tr3, _ = F.split_concepts(1854, seed=43)
    assert not np.array_equal(tr, tr3)
    with pytest.raises(ValueError):
        F.split_concepts(1)


def test_things_plus_targets_known_facts(data_root):
    Y, names = F.things_plus_targets(data_root)
    assert Y.shape == (1854, 26) and Y.dtype == np.float32
    assert names[0] == "candy" and names[2] == "mammal" and names[-1] == "women's clothing"
    assert int((Y.sum(axis=1) > 0).sum()) == 588  # PROVENANCE.md
    assert set(np.unique(Y)) == {0.0, 1.0}
    from convexlib.data import load_concepts

    words = load_concepts(data_root)["Word"]
    mammal = names.index("mammal")
    assert Y[words.tolist().index("aardvark"), mammal] == 1.0
    assert Y[words.tolist().index("abacus")].sum() == 0.0


def test_multilabel_metrics_hand_computed():
    Y = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    logits = np.array([[2.0, -1.0], [1.0, 3.0], [-1.0, -2.0], [0.5, -3.0]])
    m = F.multilabel_metrics(logits, Y)
    # predictions: (0,0) (0,1)... tp = 2 [(0,0), (1,1)], fp = 2 [(1,0), (3,0)], fn = 1 [(2,0)] -> F1 = 4/7
    assert m["micro_f1"] == pytest.approx(4 / 7)
    # label 0 ranking by score: rows 0 (+), 1 (-), 3 (-), 2 (+) -> AP = (1/1 + 2/4) / 2 = 0.75; label 1: AP = 1
    assert m["map"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["map_chance"] == pytest.approx((0.5 + 0.25) / 2)


# ---------------------------------------------------------------------------------------------------------------
# Tiny random BERT fine-tuned for a few steps
# ---------------------------------------------------------------------------------------------------------------

_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "of", "and", "or", "to", "in", "animal", "food",
          "that", "is", "with", "for", "used", "small", "large", "made", "on", ":", ";", ",", "-", "##s", "##ed",
          "##ing", "fish", "tool", "bird", "cat", "dog", "water", "wood", "metal", "fruit", "plant"]


@pytest.fixture(scope="module")
def tiny_run(data_root, tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(_VOCAB) + "\n", encoding="utf-8")
    cache = tmp_path_factory.mktemp("ftcache")
    factory = F.tiny_bert_factory(vocab, seed=0, hidden_size=16, num_layers=2)
    kw = dict(seed=7, epochs=1, max_steps=4, batch_size=8, lr=1e-3, head_lr=1e-2, cache_dir=cache,
              progress=False, model_factory=factory, num_threads=1)
    rng_before = torch.random.get_rng_state()
    first = F.finetune_minilm(data_root, **kw)
    rng_after = torch.random.get_rng_state()
    return {"first": first, "kw": kw, "factory": factory, "cache": cache,
            "rng_untouched": torch.equal(rng_before, rng_after)}


def _hidden(encoder, tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return [h.clone() for h in encoder(**enc, output_hidden_states=True).hidden_states]


def test_tiny_finetune_changes_weights_and_reloads_identically(tiny_run):
    res = tiny_run["first"]
    assert res.trained and res.info["steps"] == 4 and len(res.step_losses) == 4
    assert tiny_run["rng_untouched"]  # training runs under fork_rng: the global RNG is restored
    base, tok = tiny_run["factory"]()
    trained = res.encoder.state_dict()
    changed = [k for k, v in base.state_dict().items() if not torch.equal(v, trained[k])]
    assert any("encoder.layer.0" in k for k in changed) and any("embeddings" in k for k in changed)
    files = {p.name for p in res.path.iterdir()}
    assert {"model.safetensors", "head.safetensors", "finetune.json", "config.json", "tokenizer.json"} <= files
    encoder, tokenizer, head, meta = F.load_checkpoint(res.path)
    texts = ["a small animal that is used for food", "the tool of metal"]
    for h0, h1 in zip(_hidden(res.encoder, res.tokenizer, texts), _hidden(encoder, tokenizer, texts)):
        assert torch.equal(h0, h1)
    for k, v in res.encoder.state_dict().items():
        assert torch.equal(v, encoder.state_dict()[k]), k
    assert torch.equal(head.weight, res.head.weight)
    assert meta["digest"] == res.key and meta["step_losses"] == res.step_losses
    assert not (res.path.parent / f".tmp-{res.key}").exists()
    assert [p.name for p in res.path.parent.iterdir() if p.name.startswith(".")] == []


def test_tiny_finetune_rerun_loads_without_training(tiny_run, data_root, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("the training loop ran although the checkpoint exists")

    monkeypatch.setattr(F, "_train_loop", no_training)
    again = F.finetune_minilm(data_root, **tiny_run["kw"])
    first = tiny_run["first"]
    assert again.trained is False and again.key == first.key and again.path == first.path
    assert again.step_losses == first.step_losses
    for k, v in first.encoder.state_dict().items():
        assert torch.equal(v, again.encoder.state_dict()[k])
    # another setting is another key (and would train)
    with pytest.raises(AssertionError, match="training loop ran"):
        F.finetune_minilm(data_root, **{**tiny_run["kw"], "lr": 2e-3})


def test_tiny_finetune_split_keeps_training_concepts_out_of_the_eval_half(tiny_run, data_root):
    res = tiny_run["first"]
    tr, ev = F.split_concepts(1854, seed=7)
    assert np.array_equal(res.train_idx, tr) and np.array_equal(res.eval_idx, ev)
    assert np.isin(res.train_items, tr).all() and np.intersect1d(res.train_items, ev).size == 0
    Y, _ = F.things_plus_targets(data_root)
    assert (Y[res.train_items].sum(axis=1) > 0).all()
    assert len(res.train_items) == int((Y[tr].sum(axis=1) > 0).sum())
    meta = json.loads((res.path / "finetune.json").read_text())
    assert meta["split"]["train_idx"] == tr.tolist()
    lset = F.eval_half_superclasses(data_root, res.eval_idx, 5, exclude=res.train_idx)
    assert np.intersect1d(lset.rows, res.train_idx).size == 0 and np.isin(lset.rows, res.eval_idx).all()
    assert len(set(lset.labels)) + len(lset.dropped) == 27
    with pytest.raises(ValueError, match="overlaps"):
        F.eval_half_superclasses(data_root, res.eval_idx, 5, exclude=res.eval_idx[:3])


def test_registered_finetuned_model_extracts_its_hidden_states(tiny_run, tmp_path):
    from convexlib.features import extract

    res = tiny_run["first"]
    spec = F.register_finetuned(res, name="tiny-ft-test", label="tiny ft")
    try:
        assert spec.revision == res.key and spec.variant == "finetuned" and spec.n_layers == 2
        texts = ["a small animal", "the tool of metal and wood"]
        feats = extract("tiny-ft-test", texts, cache_dir=tmp_path, progress=False, device="cpu")
        hs = _hidden(res.encoder, res.tokenizer, texts)
        mask = res.tokenizer(texts, padding=True, return_tensors="pt")["attention_mask"]
        for layer in (1, 2):
            want = M.pool_tokens(hs[layer], "mean_mask", attention_mask=mask).numpy()
            np.testing.assert_allclose(feats[layer], want, rtol=1e-5, atol=1e-6)
        ident = M.model_identity("tiny-ft-test")
        assert ident["revision"] == res.key
    finally:
        M.unregister_model("tiny-ft-test")


def test_corrupt_checkpoint_is_detected(tiny_run, tmp_path):
    import shutil

    from convexlib.errors import CacheError

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_run["first"].path, copy)
    with open(copy / "head.safetensors", "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(CacheError, match="sha256"):
        F.load_checkpoint(copy)


def test_offline_layerwise_rows_use_only_the_eval_half(tiny_run, data_root, tmp_path, monkeypatch):
    """The measurement glue, with fake features: layerwise's tidy format, convexity on eval-half rows only."""
    from convexlib import experiments as E
    from convexlib import profiles

    res = tiny_run["first"]
    seen_rows = []
    real_conv = E.convexity_per_layer

    def fake_features(cfg, spec, items, progress=True):
        rng = np.random.default_rng(len(spec.name))
        return {layer: rng.normal(size=(len(items), 8)).astype(np.float32) for layer in range(1, spec.n_layers + 1)}

    def spy_conv(feats, lset, cfg, **kw):
        seen_rows.append(np.asarray(lset.rows))
        return real_conv(feats, lset, cfg, **kw)

    monkeypatch.setattr(E, "model_features", fake_features)
    monkeypatch.setattr(E, "convexity_per_layer", spy_conv)
    cfg = profiles.resolve(profile="offline", data_root=str(data_root), cache_dir=str(tmp_path), max_paths=30)
    try:
        tidy = F.offline_finetune_layerwise(cfg, res, progress=False)
    finally:
        M.unregister_model("minilm-ft")
    cols = ["profile", "model", "label", "family", "variant", "group", "size", "n_layers", "layer", "depth",
            "dataset", "metric", "value", "seed"]
    assert list(tidy.columns) == cols
    n_layers = {"minilm": 6, "minilm-ft": 2}
    for model, L in n_layers.items():
        sub = tidy[tidy["model"] == model]
        assert sorted(sub.loc[sub["metric"] == "oooa", "layer"]) == list(range(1, L + 1))
        assert set(sub["metric"]) == {"convexity", "convexity_sem", "convexity_baseline", "oooa"}
    assert set(tidy.loc[tidy["model"] == "minilm-ft", "group"]) == {"finetuned"}
    assert len(seen_rows) == 2 and all(np.intersect1d(r, res.train_idx).size == 0 for r in seen_rows)
    assert tidy.attrs["dropped"] == {} and tidy.attrs["min_class_size"] == 5
    t = F.table2(tidy, F.OFFLINE_PAIRS)
    assert t.iloc[0]["convexity_set"] == "things-superclasses-evalhalf" and t.iloc[0]["oooa_set"] == "things-human-20k"
