"""Tests for convexlib.features: extract(), its cache, THINGS texts and MiniLM on THINGS (offline)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from convexlib import features as F
from convexlib import models as M
from convexlib.cache import load_arrays
from convexlib.data.sets import ImageSet, TextSet


@pytest.fixture(scope="module")
def image_set(tmp_path_factory) -> ImageSet:
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(7)
    paths = []
    for i in range(11):
        p = folder / f"im{i:02d}.png"
        mode_shape = (36 + i, 44, 3)
        Image.fromarray(rng.integers(0, 256, mode_shape, dtype=np.uint8)).save(p)
        paths.append(p)
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(folder / "gray.png")  # grey -> RGB
    paths.append(folder / "gray.png")
    return ImageSet(tuple(paths), np.arange(12) % 3, name="synthetic")


@pytest.fixture(scope="module")
def tiny_vit():
    return M.load_model("tiny-vit")


class _Counter:
    """Counts LoadedModel.forward_layers calls and load_model calls."""

    def __init__(self, monkeypatch):
        self.forwards = 0
        self.loads = 0
        orig_fwd = M.LoadedModel.forward_layers
        orig_load = M.load_model

        def fwd(lm, *a, **k):
            self.forwards += 1
            return orig_fwd(lm, *a, **k)

        def load(*a, **k):
            self.loads += 1
            return orig_load(*a, **k)

        monkeypatch.setattr(M.LoadedModel, "forward_layers", fwd)
        monkeypatch.setattr(M, "load_model", load)


def _reference(lm, image_set, layers, pooling):
    with torch.inference_mode():
        batch = torch.stack([lm.preprocess(Image.open(p).convert("RGB")) for p in image_set.paths])
        out = lm.forward_layers(batch, layers, pooling)
    return {layer: out[(layer, pooling)].numpy() for layer in layers}


# ---------------------------------------------------------------- extraction


def test_extract_matches_forward_and_keeps_order(image_set, tiny_vit):
    got = F.extract(tiny_vit, image_set, cache=False, batch_size=5, progress=False)
    assert sorted(got) == [1, 2, 3, 4]
    ref = _reference(tiny_vit, image_set, (1, 2, 3, 4), "cls")
    for layer in range(1, 5):
        assert got[layer].shape == (12, 32) and got[layer].dtype == np.float32
        np.testing.assert_allclose(got[layer], ref[layer], rtol=1e-5, atol=1e-6)
    rev = F.extract(tiny_vit, image_set.subset(np.arange(12)[::-1]), [2], cache=False, batch_size=4, progress=False)
    np.testing.assert_allclose(rev[2], got[2][::-1], rtol=1e-5, atol=1e-6)
    assert len({r.tobytes() for r in got[4]}) == 12  # different images, different rows


@pytest.mark.parametrize("num_workers,batch_size", [(0, 1), (3, 12), (2, 5)])
def test_batching_and_workers_do_not_change_numbers(image_set, tiny_vit, num_workers, batch_size):
    base = F.extract(tiny_vit, image_set, [1, 4], cache=False, batch_size=4, num_workers=1, progress=False)
    got = F.extract(tiny_vit, image_set, [1, 4], cache=False, batch_size=batch_size, num_workers=num_workers,
                    progress=False)
    for layer in (1, 4):
        np.testing.assert_allclose(got[layer], base[layer], rtol=1e-5, atol=1e-6)


def test_result_shapes_single_and_multi_pooling(image_set):
    one = F.extract("tiny-beit", image_set, [3], cache=False, progress=False)
    assert list(one) == [3]
    many = F.extract("tiny-beit", image_set, [1, 3], pooling=["mean_patch", "cls"], cache=False, progress=False)
    assert list(many) == ["mean_patch", "cls"] and list(many["cls"]) == [1, 3]
    np.testing.assert_allclose(many["mean_patch"][3], one[3], rtol=1e-6, atol=1e-6)  # default = spec pooling
    assert not np.allclose(many["cls"][3], many["mean_patch"][3])
    lone = F.extract("tiny-beit", image_set, 3, pooling="cls", cache=False, progress=False)
    np.testing.assert_array_equal(lone[3], many["cls"][3])


def test_bad_requests_fail_before_loading(image_set, monkeypatch):
    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("must not load"))
    for bad in (0, 5):
        with pytest.raises(ValueError, match=r"valid layers are 1\.\.4"):
            F.extract("tiny-vit", image_set, bad, cache=False)
    with pytest.raises(ValueError, match="does not apply"):
        F.extract("tiny-vit", image_set, pooling="mean_mask", cache=False)
    with pytest.raises(ValueError, match="text model"):
        F.extract("minilm", image_set, cache=False)
    with pytest.raises(ValueError, match="empty"):
        F.extract("tiny-vit", image_set.subset([]), cache=False)
    with pytest.raises(ValueError, match="batch_size"):
        F.extract("tiny-vit", image_set, batch_size=0, cache=False)


def test_unreadable_image_is_named(tmp_path, image_set):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    s = ImageSet((image_set.paths[0], bad))
    with pytest.raises(OSError, match="broken.png"):
        F.extract("tiny-vit", s, cache=False, progress=False)


# ---------------------------------------------------------------- cache


def test_cache_miss_then_hit_without_model(image_set, tmp_path, monkeypatch):
    counter = _Counter(monkeypatch)
    first = F.extract("tiny-data2vec", image_set, [2, 4], batch_size=5, cache_dir=tmp_path, progress=False)
    assert counter.loads == 1 and counter.forwards == 3  # 12 items / 5 per batch
    files = list((tmp_path / "features" / "tiny-data2vec").glob("*.npz"))
    assert len(files) == 1
    arrays, meta = load_arrays(files[0])
    assert sorted(arrays) == [f"layer_0{i}" for i in range(1, 5)]  # every layer is stored
    assert meta["key"]["pooling"] == "mean_patch" and meta["key"]["data"]["n"] == 12

    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("a warm cache must not load the model"))
    again = F.extract("tiny-data2vec", image_set, [2, 4], cache_dir=tmp_path, progress=False)
    other_layers = F.extract("tiny-data2vec", image_set, [1, 3], cache_dir=tmp_path, progress=False)
    assert counter.forwards == 3
    for layer in (2, 4):
        np.testing.assert_array_equal(again[layer], first[layer])
    np.testing.assert_array_equal(other_layers[3], arrays["layer_03"])


def test_cache_key_changes_with_pooling_data_and_model(image_set, tmp_path, monkeypatch):
    fp = image_set.fingerprint()
    k_mean = F.feature_key("tiny-beit", image_set, "mean_patch", fingerprint=fp)
    k_cls = F.feature_key("tiny-beit", image_set, "cls", fingerprint=fp)
    assert {k for k in k_mean if k_mean[k] != k_cls[k]} == {"pooling"}
    assert F.feature_cache_path("tiny-beit", k_mean, tmp_path) != F.feature_cache_path("tiny-beit", k_cls, tmp_path)
    assert F.feature_key("tiny-beit", image_set.subset([1, 0]), "cls")["data"] != k_cls["data"]
    assert F.feature_key(M.get_spec("tiny-vit").with_(norm="final"), image_set, "cls")["model"]["norm"] == "final"
    assert F.feature_key("tiny-vit", image_set, "cls", fingerprint=fp)["model"] != k_cls["model"]

    counter = _Counter(monkeypatch)
    F.extract("tiny-beit", image_set, [1], cache_dir=tmp_path, progress=False)
    F.extract("tiny-beit", image_set, [1], pooling="cls", cache_dir=tmp_path, progress=False)  # new key: miss
    assert counter.loads == 2
    both = F.extract("tiny-beit", image_set, [1], pooling=["cls", "mean_patch"], cache_dir=tmp_path, progress=False)
    assert counter.loads == 2 and set(both) == {"cls", "mean_patch"}
    F.extract("tiny-beit", image_set.subset(range(6)), [1], cache_dir=tmp_path, progress=False)  # other data: miss
    assert counter.loads == 3
    assert len(list((tmp_path / "features" / "tiny-beit").glob("*.npz"))) == 3


def test_multi_pooling_partial_hit_runs_one_pass(image_set, tmp_path, monkeypatch):
    F.extract("tiny-vit", image_set, [1], pooling="cls", cache_dir=tmp_path, progress=False)
    counter = _Counter(monkeypatch)
    res = F.extract("tiny-vit", image_set, [1], pooling=["cls", "mean_patch"], batch_size=12, cache_dir=tmp_path,
                    progress=False)
    assert counter.loads == 1 and counter.forwards == 1  # only mean_patch was missing
    assert set(res) == {"cls", "mean_patch"}


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_key"])
def test_corrupt_cache_is_recomputed(image_set, tmp_path, monkeypatch, caplog, damage):
    first = F.extract("tiny-vit", image_set, [3], cache_dir=tmp_path, progress=False)
    (path,) = (tmp_path / "features" / "tiny-vit").glob("*.npz")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:  # a valid entry of another key copied into this name
        other = F.extract("tiny-vit", image_set, [3], pooling="mean_patch", cache_dir=tmp_path, progress=False)
        assert not np.allclose(other[3], first[3])
        (other_path,) = [p for p in (tmp_path / "features" / "tiny-vit").glob("*.npz") if p != path]
        path.write_bytes(other_path.read_bytes())
    counter = _Counter(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="convexlib.features"):
        again = F.extract("tiny-vit", image_set, [3], cache_dir=tmp_path, progress=False)
    assert counter.loads == 1 and "recomputing" in caplog.text
    np.testing.assert_allclose(again[3], first[3], rtol=1e-6, atol=1e-7)
    arrays, _ = load_arrays(path)  # repaired on disk
    np.testing.assert_allclose(arrays["layer_03"], first[3], rtol=1e-6, atol=1e-7)


def test_no_cache_writes_nothing(image_set, tmp_cache):
    F.extract("tiny-vit", image_set, [1], cache=False, progress=False)
    assert not any(tmp_cache.rglob("*.npz"))
    F.extract("tiny-vit", image_set, [1], progress=False)  # default cache dir: $CONVEXLIB_CACHE
    assert len(list(tmp_cache.rglob("*.npz"))) == 1


def test_wrapped_module_cache_tracks_weights(image_set, tmp_path, tiny_vit):
    import copy

    module = copy.deepcopy(tiny_vit.module)
    lm = M.wrap_module(module, name="wrapped", pooling="cls", preprocess=tiny_vit.preprocess,
                       preprocess_id="tiny-vit processor")
    a = F.extract(lm, image_set, [4], cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        module.layers[3].mlp.fc2.bias += 1.0
    lm2 = M.wrap_module(module, name="wrapped", pooling="cls", preprocess=tiny_vit.preprocess,
                        preprocess_id="tiny-vit processor")
    b = F.extract(lm2, image_set, [4], cache_dir=tmp_path, progress=False)
    assert not np.allclose(a[4], b[4])  # new weights, new key, recomputed
    assert len(list((tmp_path / "features" / "wrapped").glob("*.npz"))) == 2


# ---------------------------------------------------------------- texts


def test_things_texts_small_frame():
    df = pd.DataFrame({"Word": ["bat", "bat", "dog"],
                       "definition": ["club used for hitting a ball", "nocturnal flying mammal", "a domestic canid"]})
    assert F.things_texts(df).texts == ("bat: club used for hitting a ball", "bat: nocturnal flying mammal",
                                        "dog: a domestic canid")
    assert F.things_texts(df, "word").texts == ("bat", "bat", "dog")
    assert F.things_texts(df, "definition").texts[2] == "a domestic canid"
    with pytest.raises(ValueError, match="mode"):
        F.things_texts(df, "name")
    with pytest.raises(ValueError, match="no definition"):
        F.things_texts(df.assign(definition=["x", None, "y"]))
    assert F.things_texts(df[["Word"]], "word").texts[0] == "bat"


@pytest.fixture(scope="module")
def things_df(data_root):
    return pd.read_csv(data_root / "thingsvision" / "things_concepts.tsv", sep="\t")


def test_things_texts_real(things_df):
    wd = F.things_texts(things_df)
    assert len(wd) == 1854 and len(set(wd.texts)) == 1854
    assert wd.texts[0].startswith("aardvark: nocturnal burrowing mammal")
    words = F.things_texts(things_df, "word")
    assert len(set(words.texts)) == 1823  # 58 concepts share a name with another
    assert wd.fingerprint() != words.fingerprint()


def test_minilm_things_names_offline(things_df, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    names = F.things_texts(things_df, "word")
    feats = F.extract("minilm", names, batch_size=128, device="cpu", cache_dir=tmp_path, progress=False)
    assert sorted(feats) == [1, 2, 3, 4, 5, 6]
    assert all(f.shape == (1854, 384) and np.isfinite(f).all() for f in feats.values())
    bat1, bat2 = 87, 88  # "bat" twice: identical name, identical features
    np.testing.assert_allclose(feats[6][bat1], feats[6][bat2], rtol=1e-5, atol=1e-6)
    index = {w: i for i, w in reversed(list(enumerate(names.texts)))}
    last = feats[6] / np.linalg.norm(feats[6], axis=1, keepdims=True)
    dog, puppy, car = last[index["dog"]], last[index["puppy"]], last[index["car"]]
    assert dog @ puppy > dog @ car + 0.2
    # nearest THINGS concept of "puppy" (other than itself) in the last layer is "dog"
    sims = last @ puppy
    sims[index["puppy"]] = -np.inf
    assert names.texts[int(np.argmax(sims))] == "dog"
    # warm cache: no model, no forward
    monkeypatch.setattr(M, "load_model", lambda *a, **k: pytest.fail("warm cache must not load"))
    again = F.extract("minilm", names, [6], cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again[6], feats[6])


def test_text_list_input_and_padding_invariance():
    texts = ["dog", "a very long sentence about a dog that runs across the field to fetch a ball", "car"]
    together = F.extract("minilm", texts, [6], cache=False, batch_size=3, progress=False)
    alone = F.extract("minilm", TextSet(("dog",)), [6], cache=False, progress=False)
    np.testing.assert_allclose(together[6][0], alone[6][0], rtol=1e-4, atol=1e-5)
