"""Bring your own representations (convexlib.byo): loaders, sources, the per-layer table and correlations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from convexlib import byo as B
from convexlib import experiments as E
from convexlib import profiles
from convexlib.convexity import graph_convexity


# ------------------------------------------------------------------------------------------------------------------
# synthetic data: class blobs whose separation grows with depth
# ------------------------------------------------------------------------------------------------------------------

def _blobs(separations=(0.2, 1.0, 4.0), n_classes=4, per_class=25, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, d))
    y = np.repeat(np.arange(n_classes), per_class)
    noise = [rng.standard_normal((len(y), d)) for _ in separations]
    layers = {l + 1: (centres[y] * s + noise[l]).astype(np.float32) for l, s in enumerate(separations)}
    labels = np.array([f"class{c}" for c in y], dtype=object)
    return layers, labels, y


def _class_triplets(y, n=300, seed=1):
    """(i, j, k): i, j of one class, k of another, so k is the odd one out."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        i, j, k = rng.integers(0, len(y), 3)
        if i != j and y[i] == y[j] and y[k] != y[i]:
            out.append((i, j, k))
    return np.array(out, dtype=np.int64)


def _save_layers(folder: Path, layers) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for l, X in layers.items():
        np.save(folder / f"layer_{l}.npy", X)
    return folder


# ------------------------------------------------------------------------------------------------------------------
# load_layer_arrays
# ------------------------------------------------------------------------------------------------------------------

def test_layer_folder_and_npz_round_trip(tmp_path):
    layers, _, _ = _blobs()
    got = B.load_layer_arrays(_save_layers(tmp_path / "f", layers))
    assert list(got) == [1, 2, 3]
    for l in layers:
        np.testing.assert_array_equal(got[l], layers[l])
        assert got[l].dtype == np.float32
    np.savez(tmp_path / "x.npz", **{f"layer_{l}": X for l, X in layers.items()})
    got2 = B.load_layer_arrays(tmp_path / "x.npz")
    assert list(got2) == [1, 2, 3] and all(np.array_equal(got2[l], layers[l]) for l in layers)
    # zero-padded names, integer arrays become float64, unrelated non-.npy files are ignored
    g = tmp_path / "pad"
    g.mkdir()
    np.save(g / "layer_01.npy", np.arange(6).reshape(3, 2))
    np.save(g / "layer_02.npy", np.ones((3, 5)))
    (g / "README.txt").write_text("notes")
    got3 = B.load_layer_arrays(g)
    assert list(got3) == [1, 2] and got3[1].dtype == np.float64 and got3[2].shape == (3, 5)


def test_layer_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        B.load_layer_arrays(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "labels.csv").write_text("label\na\n")
    with pytest.raises(ValueError, match=r"no layer_<l>.npy files.*labels.csv"):
        B.load_layer_arrays(empty)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "layer_1.npy", np.zeros((3, 2)))
    np.save(bad / "layer2.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"named layer_<l>.npy.*not understood: \['layer2.npy'\]"):
        B.load_layer_arrays(bad)
    gap = tmp_path / "gap"
    _save_layers(gap, {1: np.zeros((3, 2)), 3: np.zeros((3, 2))})
    with pytest.raises(ValueError, match=r"without gaps.*missing \[2\]"):
        B.load_layer_arrays(gap)
    zero = tmp_path / "zero"
    _save_layers(zero, {0: np.zeros((3, 2)), 1: np.zeros((3, 2))})
    with pytest.raises(ValueError, match="numbered from 1"):
        B.load_layer_arrays(zero)
    twice = tmp_path / "twice"
    _save_layers(twice, {1: np.zeros((3, 2))})
    np.save(twice / "layer_01.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="layer 1 is given twice"):
        B.load_layer_arrays(twice)
    rows = tmp_path / "rows"
    _save_layers(rows, {1: np.zeros((3, 2)), 2: np.zeros((4, 2))})
    with pytest.raises(ValueError, match=r"row counts differ: \{'layer_1.npy': 3, 'layer_2.npy': 4\}"):
        B.load_layer_arrays(rows)
    nan = tmp_path / "nan"
    X = np.zeros((5, 2))
    X[3, 1] = np.nan
    _save_layers(nan, {1: np.zeros((5, 2)), 2: X})
    with pytest.raises(ValueError, match=r"layer_2.npy: 1 NaN/inf value\(s\) in 1 row\(s\), first at row 3"):
        B.load_layer_arrays(nan)
    one_d = tmp_path / "oned"
    _save_layers(one_d, {1: np.zeros(5)})
    with pytest.raises(ValueError, match="must be a 2-d array"):
        B.load_layer_arrays(one_d)
    strs = tmp_path / "strs"
    _save_layers(strs, {1: np.array([["a", "b"]])})
    with pytest.raises(ValueError, match="real numbers"):
        B.load_layer_arrays(strs)
    np.savez(tmp_path / "keys.npz", layer_1=np.zeros((3, 2)), emb=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"not understood: \['emb'\]"):
        B.load_layer_arrays(tmp_path / "keys.npz")
    (tmp_path / "x.h5").write_text("")
    with pytest.raises(ValueError, match="folder of layer_<l>.npy files or an .npz"):
        B.load_layer_arrays(tmp_path / "x.h5")


# ------------------------------------------------------------------------------------------------------------------
# labels and triplets
# ------------------------------------------------------------------------------------------------------------------

def test_load_labels_formats(tmp_path):
    (tmp_path / "a.csv").write_text("concept,label\naardvark,animal\nbat,\ncar,vehicle\n")
    assert B.load_labels(tmp_path / "a.csv", 3).tolist() == ["animal", None, "vehicle"]
    (tmp_path / "b.txt").write_text("animal\n\n vehicle \n")
    assert B.load_labels(tmp_path / "b.txt").tolist() == ["animal", None, "vehicle"]
    (tmp_path / "c.tsv").write_text("label\tx\nNA\t1\n\t2\n")
    assert B.load_labels(tmp_path / "c.tsv").tolist() == ["NA", None]  # only empty means missing
    np.save(tmp_path / "d.npy", np.array([1.0, np.nan, 3.0]))
    assert B.load_labels(tmp_path / "d.npy").tolist() == ["1", None, "3"]
    np.save(tmp_path / "e.npy", np.array(["x", "", " y "]))
    assert B.load_labels(tmp_path / "e.npy").tolist() == ["x", None, "y"]
    np.save(tmp_path / "f.npy", np.array([2, 0, 2]))
    assert B.load_labels(tmp_path / "f.npy").tolist() == ["2", "0", "2"]


def test_load_labels_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels file not found"):
        B.load_labels(tmp_path / "missing.csv")
    (tmp_path / "a.txt").write_text("a\nb\n\n")
    with pytest.raises(ValueError, match=r"3 labels for 2 items.*last line is empty"):
        B.load_labels(tmp_path / "a.txt", 2)
    (tmp_path / "b.csv").write_text("concept,category\nx,y\n")
    with pytest.raises(ValueError, match="column named 'label'"):
        B.load_labels(tmp_path / "b.csv")
    np.save(tmp_path / "c.npy", np.zeros((2, 2)))
    with pytest.raises(ValueError, match="must be 1-d"):
        B.load_labels(tmp_path / "c.npy")
    # a pickled object array is refused (unpickling can run code), with the way to save labels instead
    np.save(tmp_path / "obj.npy", np.array(["x", None], dtype=object))
    with pytest.raises(ValueError, match="not loaded because unpickling can run code"):
        B.load_labels(tmp_path / "obj.npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npy"):
        B.load_labels(tmp_path / "empty.npy")
    (tmp_path / "d.json").write_text("[]")
    with pytest.raises(ValueError, match=r"\.npy, \.csv, \.tsv or \.txt"):
        B.load_labels(tmp_path / "d.json")


def test_load_triplets(tmp_path):
    t = np.array([[0, 1, 2], [3, 1, 0]])
    np.save(tmp_path / "t.npy", t)
    np.testing.assert_array_equal(B.load_triplets(tmp_path / "t.npy", 4), t)
    with pytest.raises(ValueError, match=r"out of range for 3 items, first at row 1"):
        B.load_triplets(tmp_path / "t.npy", 3)
    np.save(tmp_path / "f.npy", t.astype(float))
    with pytest.raises(ValueError, match="must be integers"):
        B.load_triplets(tmp_path / "f.npy", 4)
    np.save(tmp_path / "s.npy", np.zeros((4, 2), dtype=int))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        B.load_triplets(tmp_path / "s.npy", 4)
    np.save(tmp_path / "r.npy", np.array([[0, 0, 1]]))
    with pytest.raises(ValueError, match="repeats an item"):
        B.load_triplets(tmp_path / "r.npy", 4)
    (tmp_path / "t.csv").write_text("0,1,2\n")
    with pytest.raises(ValueError, match=r"\.npy file"):
        B.load_triplets(tmp_path / "t.csv", 4)
    with pytest.raises(FileNotFoundError):
        B.load_triplets(tmp_path / "none.npy", 4)


# ------------------------------------------------------------------------------------------------------------------
# the per-layer table
# ------------------------------------------------------------------------------------------------------------------

def test_convexity_and_oooa_grow_with_separation(tmp_cache):
    layers, labels, y = _blobs()
    trip = _class_triplets(y)
    df = B.byo_layerwise(layers, labels, trip, name="blobs", max_paths=300, min_class_size=5)
    conv = df[df.metric == "convexity"].set_index("layer")["value"]
    oooa = df[df.metric == "oooa"].set_index("layer")["value"]
    assert conv.is_monotonic_increasing and conv[3] - conv[1] > 20, conv.tolist()
    assert conv[3] > 95, conv.tolist()
    assert oooa.is_monotonic_increasing and oooa[3] > 95 and oooa[1] < 80, oooa.tolist()
    base = df[df.metric == "convexity_baseline"]["value"]
    assert (base < 60).all()  # permuted labels: near the chance level of 4 classes
    assert set(df.dataset) == {"labels", "triplets"} and (df.profile == "byo").all()
    assert df[df.layer == 3].depth.iloc[0] == 1.0 and df[df.layer == 2].depth.iloc[0] == 0.5
    # the same number as graph_convexity called directly
    direct = graph_convexity(layers[2], labels.astype(str), n_neighbors=10, max_paths=300, seed=42)
    assert conv[2] == pytest.approx(direct.score, abs=1e-9)


def test_missing_labels_and_small_classes_are_left_out(tmp_cache):
    layers, labels, y = _blobs()
    lab = labels.copy()
    lab[[0, 5, 30]] = [None, np.nan, ""]
    lab[y == 3] = np.where(np.arange((y == 3).sum()) < 4, "tiny", "")  # 4 items of a too-small class
    df = B.byo_layerwise(layers, lab, name="m", max_paths=200, min_class_size=5)
    keep = np.array([v not in (None, "") and not (isinstance(v, float) and np.isnan(v)) and v != "tiny"
                     for v in lab])
    assert keep.sum() == 100 - 25 - 3
    for l in (1, 3):
        direct = graph_convexity(layers[l][keep], lab[keep].astype(str), max_paths=200, seed=42)
        got = df[(df.metric == "convexity") & (df.layer == l)]["value"].iloc[0]
        assert got == pytest.approx(direct.score, abs=1e-9)
    ls = B.labelled_set(lab, min_class_size=5)
    assert ls.dropped == {"tiny": 4} and len(ls.rows) == keep.sum()
    np.testing.assert_array_equal(ls.rows, np.flatnonzero(keep))


def test_byo_matches_experiments_layerwise(tmp_path, monkeypatch):
    """Same features, labels and triplets through experiments.layerwise and byo_layerwise: same table."""
    layers, labels, y = _blobs(separations=(0.3, 1.0, 2.5, 6.0))
    trip = _class_triplets(y)
    lset = B.labelled_set(labels, min_class_size=5, name="blobs")
    tset = E.TripletSet("trip", lset.items, E.D.Triplets(trip, len(y), source="test"))
    monkeypatch.setattr(E, "evaluation_sets", lambda cfg, spec, seed=None: ([lset], tset))
    monkeypatch.setattr(E, "model_features", lambda cfg, spec, items, progress=True: layers)
    cfg = profiles.resolve("tiny", cache_dir=str(tmp_path / "c1"), max_paths=300, min_class_size=5)
    ref = E.layerwise(cfg, ["tiny-vit"], progress=False)  # tiny-vit has 4 layers, like the blobs
    got = B.byo_layerwise(layers, labels, trip, name="tiny-vit", dataset="blobs", triplet_set="trip",
                          max_paths=300, min_class_size=5, cache_dir=tmp_path / "c2")
    assert list(got.columns) == list(ref.columns)
    pd.testing.assert_frame_equal(got[["layer", "depth", "dataset", "metric", "value", "seed", "n_layers"]],
                                  ref[["layer", "depth", "dataset", "metric", "value", "seed", "n_layers"]],
                                  check_dtype=False)
    # the correlation helpers accept it
    wide = E.primary_wide(got)
    assert list(wide.columns[-4:]) == ["convexity", "convexity_set", "oooa", "oooa_set"] and len(wide) == 4


def test_byo_layerwise_errors(tmp_cache):
    layers, labels, _ = _blobs()
    with pytest.raises(ValueError, match="99 labels for 100 items"):
        B.byo_layerwise(layers, labels[:-1])
    with pytest.raises(ValueError, match=r"at least 2 classes.*dropped as too small"):
        B.byo_layerwise(layers, labels, min_class_size=30)
    with pytest.raises(ValueError, match="no labelled items"):
        B.byo_layerwise(layers, [None] * 100)
    with pytest.raises(ValueError, match="without gaps"):
        B.byo_layerwise({1: layers[1], 3: layers[3]}, labels)
    with pytest.raises(ValueError, match="out of range"):
        B.byo_layerwise(layers, labels, np.array([[0, 1, 100]]))
    with pytest.raises(ValueError, match="convexity_rows must lie in"):
        B.byo_layerwise(layers, labels, convexity_rows=[0, 100])


def test_convexity_rows_restrict(tmp_cache):
    layers, labels, _ = _blobs()
    rows = np.arange(0, 100, 2)
    df = B.byo_layerwise(layers, labels, convexity_rows=rows, max_paths=200, min_class_size=5)
    direct = graph_convexity(layers[3][rows], labels[rows].astype(str), max_paths=200, seed=42)
    assert df[(df.metric == "convexity") & (df.layer == 3)]["value"].iloc[0] == pytest.approx(direct.score)
    assert "oooa" not in set(df.metric)


# ------------------------------------------------------------------------------------------------------------------
# sources and correlation
# ------------------------------------------------------------------------------------------------------------------

def test_validate_sources_messages():
    with pytest.raises(ValueError, match="must be a list"):
        B.validate_sources("x")
    with pytest.raises(ValueError, match="exactly one of 'layers'"):
        B.validate_sources([{"labels": "a.csv"}])
    with pytest.raises(ValueError, match="exactly one of 'layers'"):
        B.validate_sources([{"layers": "a", "model": "vit", "labels": "a.csv"}])
    with pytest.raises(ValueError, match=r"sources\[0\]: unknown key\(s\) \['label'\]"):
        B.validate_sources([{"layers": "a", "label": "a.csv"}])
    with pytest.raises(ValueError, match="'labels'.*is required with 'layers'"):
        B.validate_sources([{"layers": "a"}])
    with pytest.raises(ValueError, match="exactly one of 'images'"):
        B.validate_sources([{"model": "vit"}])
    with pytest.raises(ValueError, match="'labels' is not used with 'images'"):
        B.validate_sources([{"model": "vit", "images": "f", "labels": "l.csv"}])
    with pytest.raises(ValueError, match="cannot be combined with 'max_per_class'"):
        B.validate_sources([{"model": "vit", "images": "f", "max_per_class": 3, "triplets": "t.npy"}])
    with pytest.raises(ValueError, match="'max_per_class' must be a positive int"):
        B.validate_sources([{"model": "vit", "images": "f", "max_per_class": 0}])
    with pytest.raises(ValueError, match="'labels' .one per text. is required"):
        B.validate_sources([{"model": "minilm", "texts": "t.txt"}])
    with pytest.raises(ValueError, match="must be a string"):
        B.validate_sources([{"layers": 3, "labels": "a.csv"}])
    with pytest.raises(ValueError, match=r"names must be distinct.*\['a'\]"):
        B.validate_sources([{"layers": "x/a", "labels": "l.csv"}, {"layers": "y/a", "labels": "l.csv"}])
    ok = B.validate_sources([{"layers": "x/feats.npz", "labels": "l.csv"}, {"model": "vit", "images": "f"}])
    assert [s["name"] for s in ok] == ["feats", "vit"] and ok[0]["triplets"] == ""


def _three_sources(tmp_path):
    srcs = []
    for k, seps in enumerate([(0.2, 1.0, 4.0), (0.5, 0.8, 1.5), (0.1, 2.0, 3.0, 4.0, 5.0, 6.0)]):
        layers, labels, y = _blobs(separations=seps, seed=k)
        folder = _save_layers(tmp_path / f"m{k}", layers)
        pd.DataFrame({"label": labels}).to_csv(tmp_path / "labels.csv", index=False)
        np.save(tmp_path / "trip.npy", _class_triplets(y))
        srcs.append({"layers": str(folder), "labels": str(tmp_path / "labels.csv"),
                     "triplets": str(tmp_path / "trip.npy")})
    return srcs


def test_sources_end_to_end_and_correlation(tmp_path, tmp_cache):
    srcs = B.validate_sources(_three_sources(tmp_path))
    loaded = [B.load_source(s, index=i) for i, s in enumerate(srcs)]
    assert [s.name for s in loaded] == ["m0", "m1", "m2"] and loaded[2].n_layers == 6
    assert loaded[0].dataset == "labels" and loaded[0].triplet_set == "trip"
    assert "100 items in 4 classes" in B.describe_source(loaded[0], 5)
    tidy = pd.concat([B.source_layerwise(s, max_paths=200, min_class_size=5) for s in loaded], ignore_index=True)
    corr = B.byo_correlation(tidy, n_boot=200, seed=0)
    per_model = corr[corr.kind == "per model"].set_index("model")
    # convexity and OOOA both grow with separation in every model
    assert per_model.loc["m0", "r"] > 0.9 and per_model.loc["m2", "r"] > 0.9
    wide = E.primary_wide(tidy)
    g = wide[wide.model == "m2"]
    assert per_model.loc["m2", "r"] == pytest.approx(np.corrcoef(g.oooa, g.convexity)[0, 1])
    per_layer = corr[corr.kind == "per layer"]
    assert per_layer.position.tolist() == [1, 2, 3] and (per_layer.n == 3).all()  # m2 (6 layers) gives 2, 4, 6
    assert set(corr[corr.kind == "pooled half"].half) == {"first", "second"}
    # two models: per-layer R is reported as not computable, never as a number
    corr2 = B.byo_correlation(tidy[tidy.model != "m1"], n_boot=0)
    pl = corr2[corr2.kind == "per layer"]
    assert (~pl.computable).all() and pl.r.isna().all() and pl.reason.str.contains("at least 3").all()


def test_correlation_without_triplets_and_incompatible_depths(tmp_cache):
    l3, lab, y = _blobs()
    l4, _, _ = _blobs(separations=(0.1, 0.5, 1.0, 3.0))
    a = B.byo_layerwise(l3, lab, name="a", max_paths=100, min_class_size=5)
    corr = B.byo_correlation(a, n_boot=0)
    assert (~corr.computable).all() and corr.reason.str.startswith("no OOOA").all()
    trip = _class_triplets(y)
    tidy = pd.concat([B.byo_layerwise(l3, lab, trip, name="a", max_paths=100, min_class_size=5),
                      B.byo_layerwise(l4, lab, trip, name="b", max_paths=100, min_class_size=5)])
    pl = B.byo_correlation(tidy, n_boot=0).query("kind == 'per layer'")
    assert len(pl) == 1 and "not all multiples" in pl.reason.iloc[0]


def test_registry_model_on_an_image_folder(tmp_path, tmp_cache):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "emu"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / "notes.txt").write_text("not a class")
    src = B.load_source({"model": "tiny-vit", "images": str(tmp_path / "imgs"), "max_per_class": 4}, progress=False)
    assert src.n_items == 12 and src.n_layers == 4 and src.dataset == "imgs" and src.family == "vit"
    assert src.labels.tolist() == ["cat"] * 4 + ["dog"] * 4 + ["emu"] * 4
    assert all(a.shape == (12, 32) for a in src.layers.values())
    with pytest.raises(ValueError, match="is a text model; give texts"):
        B.load_source({"model": "minilm", "images": str(tmp_path / "imgs")})
    with pytest.raises(ValueError, match="unknown model 'no-such'"):
        B.load_source({"model": "no-such", "images": str(tmp_path / "imgs")})
    (tmp_path / "t.txt").write_text("a dog\n\na cat\n")
    with pytest.raises(ValueError, match="empty line.*line 2"):
        B.load_source({"model": "minilm", "texts": str(tmp_path / "t.txt"), "labels": str(tmp_path / "t.txt")})


def test_tiny_worked_example_writes_user_files(data_root, tmp_path):
    srcs = B.validate_sources(B.write_worked_example("tiny", data_root=data_root, cache_dir=tmp_path, progress=False))
    assert [s["name"] for s in srcs] == ["tiny-vit (files)", "tiny-beit (registry)"]
    folder = Path(srcs[0]["layers"])
    assert folder.parent.parent == tmp_path / "byo_example"
    assert sorted(f.name for f in folder.iterdir()) == [f"layer_{l}.npy" for l in range(1, 5)]
    src = B.load_source(srcs[0])
    assert src.n_items == 120 and src.n_layers == 4 and src.triplets is None and src.dataset == "cifar10"
    sizes = pd.Series(src.labels).value_counts()
    assert len(sizes) == 10 and (sizes == 12).all()
