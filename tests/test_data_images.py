"""Image sets: THINGS superclass sampling (on a synthetic THINGS folder), offline sets, the torch dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from convexlib.data import (
    SUPERCLASSES,
    ImageDataset,
    UnreadableImageError,
    cifar10_images,
    imagenet_things_images,
    is_triplet_task_image,
    kriegeskorte_images,
    load_concepts,
    superclass_labels,
    things_superclass_images,
    things_triplet_images,
)
from convexlib.errors import DataNotFoundError

# ------------------------------------------------------------------------------------------------------------
# THINGS superclass sampling on a synthetic image folder laid out like the THINGS release
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def things_root(data_root, tmp_path_factory) -> Path:
    """A data root with the real concept table and THINGS/images/<uniqueID>/ holding 4 dummy files per labelled
    concept (the first named like a triplet-task image, <uid>_01b.jpg) and 3 for some unlabelled ones."""
    root = tmp_path_factory.mktemp("things_root")
    (root / "thingsvision").symlink_to(data_root / "thingsvision", target_is_directory=True)
    concepts = load_concepts(data_root)
    labels = superclass_labels(data_root, policy="most_specific")
    images = root / "THINGS" / "images"
    for i, uid in enumerate(concepts["uniqueID"]):
        if labels[i] is None and i % 10:
            continue
        folder = images / uid
        folder.mkdir(parents=True)
        for name in ("01b", "02s", "03s", "04n"):
            (folder / f"{uid}_{name}.jpg").write_bytes(f"{uid}-{name}".encode())
    return root


def test_sampling_is_deterministic_and_disjoint(things_root):
    a = things_superclass_images(things_root, n_per_class=20, seed=42)
    b = things_superclass_images(things_root, n_per_class=20, seed=42)
    c = things_superclass_images(things_root, n_per_class=20, seed=7)
    assert a.paths == b.paths and np.array_equal(a.labels, b.labels)
    assert a.paths != c.paths
    assert len(a) == 27 * 20 and len(set(a.paths)) == len(a.paths)  # never the same image twice
    assert [str(x) for x in dict.fromkeys(a.labels)] == list(SUPERCLASSES)
    assert not any(is_triplet_task_image(p) for p in a.paths)
    assert a.meta["seed"] == 42 and a.meta["triplet_images_excluded"] > 0


def test_sampling_respects_labels(things_root, data_root):
    s = things_superclass_images(things_root, n_per_class=10, seed=1)
    uid_to_label = dict(zip(load_concepts(data_root)["uniqueID"], superclass_labels(data_root)))
    for p, lab in zip(s.paths, s.labels):
        assert uid_to_label[p.parent.name] == lab  # default policy: only single-category concepts
    # most_specific lets multi-category concepts in; still no image twice
    m = things_superclass_images(things_root, n_per_class=40, seed=1, policy="most_specific")
    assert len(set(m.paths)) == len(m.paths) == 27 * 40


def test_sampling_uniform_over_images_and_limits(things_root, data_root):
    # drink has 14 single-category concepts with 3 eligible images each = 42: asking for 42 takes all of them
    drink = things_superclass_images(things_root, n_per_class=42, seed=3, classes=("drink",))
    assert len(drink) == 42 and len({p.parent.name for p in drink.paths}) == 14
    with pytest.raises(ValueError, match=r"'drink' has 42 eligible images"):
        things_superclass_images(things_root, n_per_class=43, classes=("drink",))
    with_triplet = things_superclass_images(
        things_root, n_per_class=56, seed=3, classes=("drink",), exclude_triplet_images=False
    )
    assert sum(is_triplet_task_image(p) for p in with_triplet.paths) == 14


def test_missing_things_folder_explains(data_root, tmp_path):
    with pytest.raises(DataNotFoundError, match="osf.io/jum2f"):
        things_superclass_images(data_root, n_per_class=1)


def test_triplet_images_in_things_order(things_root, data_root, tmp_path):
    uids = load_concepts(data_root)["uniqueID"].tolist()
    with pytest.raises(DataNotFoundError, match="no odd-one-out task image for 1854 of 1854"):
        things_triplet_images(things_root)
    # the synthetic THINGS folder has <uid>_01b.jpg for ~1000 concepts: the fallback still misses the others
    with pytest.raises(DataNotFoundError, match="_01b"):
        things_triplet_images(things_root, fallback_to_01b=True)
    folder = tmp_path / "images"
    folder.mkdir()
    for uid in uids:
        (folder / f"{uid}.jpg").write_bytes(uid.encode())
    s = things_triplet_images(things_root, images_dir=folder)
    assert len(s) == 1854 and s.labels.tolist() == uids
    assert [p.stem for p in s.paths] == uids and s.meta["from_01b"] == []
    (folder / "aardvark.jpg").unlink()
    s2 = things_triplet_images(things_root, images_dir=folder, fallback_to_01b=True)
    assert s2.paths[0].name == "aardvark_01b.jpg" and s2.meta["from_01b"] == ["aardvark"]


def test_triplet_image_names():
    assert is_triplet_task_image("aardvark/aardvark_01b.jpg")
    assert not is_triplet_task_image("aardvark/aardvark_02s.jpg")
    assert not is_triplet_task_image("aardvark/aardvark_11b.jpg")


# ------------------------------------------------------------------------------------------------------------
# offline image sets
# ------------------------------------------------------------------------------------------------------------


def test_imagenet_things_images(data_root):
    s = imagenet_things_images(data_root)
    assert len(s) == 188 and len(set(s.labels)) == 25
    assert all(p.is_file() for p in s.paths)
    labels = superclass_labels(data_root)
    assert [labels[i] for i in s.meta["things_index"]] == s.labels.tolist()
    s2 = imagenet_things_images(data_root, min_per_class=2)
    assert len(s2) == 187 and len(set(s2.labels)) == 24  # dessert has one photo
    assert "dessert" not in set(s2.labels)


def test_cifar10_images(data_root):
    full = cifar10_images(data_root)
    assert len(full) == 10000 and len(set(full.labels)) == 10
    a = cifar10_images(data_root, n_per_class=5, seed=42)
    assert len(a) == 50 and a.paths == cifar10_images(data_root, n_per_class=5, seed=42).paths
    assert a.paths != cifar10_images(data_root, n_per_class=5, seed=0).paths
    assert all(p.parent.name == lab for p, lab in zip(a.paths, a.labels))


def test_kriegeskorte_images(data_root):
    s = kriegeskorte_images(data_root)
    assert len(s) == 92 and s.paths[0].name == "00.png"
    counts = dict(zip(*np.unique(s.labels, return_counts=True)))
    assert counts == {
        "artificial inanimate": 21, "human bodypart": 12, "human face": 12, "natural inanimate": 23,
        "nonhuman bodypart": 12, "nonhuman face": 12,
    }  # fmt: skip
    anim = kriegeskorte_images(data_root, label="animacy")
    assert (anim.labels == "animate").sum() == 48
    with pytest.raises(ValueError, match="label must be one of"):
        kriegeskorte_images(data_root, label="colour")


# ------------------------------------------------------------------------------------------------------------
# torch dataset
# ------------------------------------------------------------------------------------------------------------


def _to_tensor(img):
    import torch

    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255.0


def test_image_dataset_applies_preprocess(data_root):
    s = kriegeskorte_images(data_root).subset([0, 5, 91])
    ds = ImageDataset(s, _to_tensor)
    assert len(ds) == 3 and ds.n_skipped == 0
    x, idx = ds[2]
    assert tuple(x.shape) == (3, 175, 175) and idx == 2
    # a HuggingFace-style processor returning a mapping with a batch dimension
    ds_hf = ImageDataset(s, lambda img: {"pixel_values": _to_tensor(img)[None]})
    assert tuple(ds_hf[0][0].shape) == (3, 175, 175)


def test_image_dataset_reports_unreadable_files(data_root, tmp_path):
    good = kriegeskorte_images(data_root).subset([0, 1])
    broken = tmp_path / "broken_image.png"
    broken.write_bytes(b"this is not an image")
    from convexlib.data import ImageSet

    s = ImageSet((good.paths[0], broken, good.paths[1]), np.array(["a", "b", "c"]))
    with pytest.raises(UnreadableImageError, match="broken_image.png"):
        ImageDataset(s, _to_tensor)[1]
    skip = ImageDataset(s, _to_tensor, on_error="skip")
    assert len(skip) == 2 and skip.n_skipped == 1 and skip.skipped[0][0] == broken
    assert [skip[i][1] for i in range(len(skip))] == [0, 2]  # positions in the original set
    with pytest.raises(ValueError, match="on_error"):
        ImageDataset(s, _to_tensor, on_error="ignore")
