"""THINGS concepts, superclasses, order permutation and the VICE embedding on the real data root."""

from __future__ import annotations

import numpy as np
import pytest

from convexlib.data import (
    SUPERCLASSES,
    load_concepts,
    load_sortindex,
    load_vice_embedding,
    raw_to_things,
    superclass_labels,
    superclass_membership,
)

# SPEC §2.1: concepts per category in the bottom-up column (memberships, multi-category concepts counted in each)
SPEC_BOTTOM_UP_COUNTS = {
    "food": 137, "animal": 95, "clothing": 60, "tool": 51, "sports equipment": 46, "vegetable": 38, "vehicle": 37,
    "musical instrument": 33, "fruit": 32, "body part": 31, "dessert": 29, "toy": 29, "part of car": 28,
    "weapon": 28, "container": 28, "furniture": 27, "kitchen tool": 27, "bird": 27, "office supply": 26,
    "plant": 21, "clothing accessory": 21, "kitchen appliance": 21, "insect": 20, "home decor": 19,
    "medical equipment": 18, "electronic device": 16, "drink": 15,
}  # fmt: skip


def test_concepts_in_things_order(data_root):
    c = load_concepts(data_root)
    assert len(c) == 1854
    assert {"index", "Word", "uniqueID", "wordnet_id", "definition"} <= set(c.columns)
    assert c["index"].tolist() == list(range(1854))
    assert c["uniqueID"].iloc[0] == "aardvark" and c["uniqueID"].iloc[-1] == "zucchini"
    # homonyms: chicken1 is the food, chicken2 the animal (rows 323/324, PROVENANCE)
    assert c["uniqueID"].iloc[323] == "chicken1" and c["uniqueID"].iloc[324] == "chicken2"
    assert c["wordnet_id"].iloc[0] == "n02082791"
    assert c["uniqueID"].is_unique


def test_superclass_names_and_counts(data_root):
    assert len(SUPERCLASSES) == 27 and list(SUPERCLASSES) == sorted(SUPERCLASSES)
    member = superclass_membership(data_root, source="bottom_up")
    assert member.shape == (1854, 27)
    assert member.sum(axis=0).to_dict() == SPEC_BOTTOM_UP_COUNTS
    assert int((member.sum(axis=1) >= 1).sum()) == 926
    assert int((member.sum(axis=1) > 1).sum()) == 34


def test_default_labels_exclude_multi_category(data_root):
    labels = superclass_labels(data_root)
    assert labels.index.tolist() == list(range(1854))
    kept = labels.dropna()
    assert len(kept) == 892 and kept.nunique() == 27
    member = superclass_membership(data_root).to_numpy()
    # every kept concept is in exactly its one category; every concept in 2+ categories is dropped
    multi = np.nonzero(member.sum(axis=1) > 1)[0]
    assert labels.iloc[multi].isna().all()
    c = load_concepts(data_root)
    assert labels[c.index[c["uniqueID"] == "aardvark"][0]] == "animal"


def test_most_specific_policy_picks_smallest_category(data_root):
    c = load_concepts(data_root)
    bu = superclass_labels(data_root, policy="most_specific")
    assert bu.notna().sum() == 926 and bu.dropna().nunique() == 27
    member = superclass_membership(data_root)
    for i in np.nonzero(member.sum(axis=1).to_numpy() == 2)[0][:34]:
        cats = [SUPERCLASSES[j] for j in np.nonzero(member.iloc[i].to_numpy())[0]]
        smallest = min(cats, key=lambda k: SPEC_BOTTOM_UP_COUNTS[k])
        assert bu[i] == smallest, (c["uniqueID"][i], cats)
    # a hand-checked case: "animal, bird" -> bird (27 < 95)
    both = np.nonzero(member["animal"].to_numpy() & member["bird"].to_numpy())[0]
    assert len(both) > 0 and (bu.iloc[both] == "bird").all()


def test_manual_source(data_root):
    man = superclass_membership(data_root, source="manual")
    assert int(man.any(axis=1).sum()) == 1295 and int((man.sum(axis=1) > 1).sum()) == 303
    assert man.sum(axis=0)["food"] == 296 and man.sum(axis=0)["animal"] == 177
    # gorilla (row 695) is marked animal and food in this matrix (known error): most specific = animal (177 < 296)
    assert load_concepts(data_root)["uniqueID"][695] == "gorilla"
    assert superclass_labels(data_root, source="manual", policy="most_specific")[695] == "animal"
    assert superclass_labels(data_root, source="manual")[695] is None


def test_bad_arguments(data_root):
    with pytest.raises(ValueError, match="source"):
        superclass_labels(data_root, source="top_down")
    with pytest.raises(ValueError, match="policy"):
        superclass_labels(data_root, policy="first")


def test_sortindex_differs_for_21_objects(data_root):
    si = load_sortindex(data_root)
    moved = np.nonzero(si != np.arange(1854))[0]
    assert len(moved) == 21
    assert set(moved) == set(range(246, 249)) | set(range(322, 325)) | set(range(453, 456)) | set(
        range(801, 805)
    ) | set(range(816, 821)) | set(range(1149, 1152))
    # raw_to_things inverts the THINGS = raw[sortindex] rule
    assert np.array_equal(raw_to_things(si, data_root), np.arange(1854))


def test_vice_embedding_things_order(data_root):
    raw = load_vice_embedding(data_root, things_order=False)
    emb = load_vice_embedding(data_root)
    assert emb.shape == (1854, 42) and emb.dtype == np.float32 and emb.min() >= 0
    assert np.array_equal(emb, raw[load_sortindex(data_root)])
    uid = load_concepts(data_root)["uniqueID"].to_numpy()

    def neighbours(E, i, k=3):
        sim = E @ E[i]
        sim[i] = -np.inf
        return set(uid[np.argsort(-sim)[:k]])

    chicken1 = int(np.nonzero(uid == "chicken1")[0][0])
    # PROVENANCE: in THINGS order chicken1 (the food) neighbours foods; in the stored raw order, animals
    assert neighbours(emb, chicken1) == {"shrimp", "croissant", "sushi"}
    assert "piglet" in neighbours(raw, chicken1)
