"""Image sets: the THINGS superclass sample of the paper and the offline sets of the data root.

Every function returns a :class:`convexlib.data.sets.ImageSet` with ``labels`` filled and its choices recorded in
``meta``. Sampling is seeded (``numpy.random.default_rng(seed)``) and independent of the file system's listing
order (files are sorted by name first).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataNotFoundError
from ..paths import data_file, data_root
from . import layout
from .sets import ImageSet
from .things import SUPERCLASSES, SuperclassPolicy, SuperclassSource, load_concepts, superclass_labels

PathLike = str | os.PathLike

__all__ = [
    "THINGS_IMAGES_HOWTO",
    "is_triplet_task_image",
    "things_image_files",
    "things_superclass_images",
    "things_triplet_images",
    "imagenet_things_images",
    "cifar10_images",
    "kriegeskorte_images",
]

THINGS_IMAGES_HOWTO = (
    "THINGS images (Hebart et al. 2019; 26,107 images of 1,854 concepts) are not downloadable without the\n"
    "publisher's password. Get them from the THINGS object concept and image database on OSF,\n"
    "https://osf.io/jum2f/ (the password of the zip archives is given on that OSF page; accept the licence\n"
    "terms there), then unpack them so that every concept folder, named by the concept's uniqueID, lies\n"
    "directly under\n"
    "    <data root>/THINGS/images/<uniqueID>/<image files>      e.g. THINGS/images/aardvark/aardvark_01b.jpg\n"
    "(move or symlink the unpacked 'object_images' folder to THINGS/images). Then\n"
    "    convexlib.data.things_superclass_images(root)\n"
    "draws the paper's 27 x 100 superclass images."
)

# The THINGS image used in the odd-one-out task for a concept is, when it is part of the database, the
# concept's first image and its name ends in the letter b (e.g. aardvark_01b.jpg), according to the README of
# the THINGS odd-one-out data release.
_TRIPLET_IMAGE = re.compile(r"_01b\.[A-Za-z]+$")


def is_triplet_task_image(path: PathLike) -> bool:
    """True for a THINGS image file that was (also) shown in the odd-one-out task (``*_01b.<ext>``)."""
    return bool(_TRIPLET_IMAGE.search(Path(path).name))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in layout.IMAGE_SUFFIXES)


def things_image_files(root: PathLike | None = None, images_dir: PathLike | None = None) -> dict[str, list[Path]]:
    """The image files of every THINGS concept found in the image folder.

    Parameters
    ----------
    root : path, optional
        Data root; the images are looked for in ``<root>/THINGS/images``.
    images_dir : path, optional
        The folder holding ``<uniqueID>/`` sub-folders, if it is elsewhere.

    Returns
    -------
    dict
        uniqueID -> sorted list of image paths, for the concepts whose folder exists (THINGS order).

    Raises
    ------
    DataNotFoundError
        The folder is missing or holds no concept folder; the message says how to get the images.
    """
    folder = Path(images_dir).expanduser() if images_dir is not None else data_root(root) / layout.THINGS_IMAGES_DIR
    if not folder.is_dir():
        raise DataNotFoundError(f"THINGS image folder {folder} does not exist.\n{THINGS_IMAGES_HOWTO}")
    concepts = load_concepts(root)
    files = {}
    for uid in concepts["uniqueID"]:
        sub = folder / uid
        if sub.is_dir():
            files[uid] = _image_files(sub)
    if not files:
        raise DataNotFoundError(
            f"{folder} holds no folder named after a THINGS uniqueID (e.g. {folder / 'aardvark'}).\n{THINGS_IMAGES_HOWTO}"
        )
    return files


def things_superclass_images(
    root: PathLike | None = None,
    n_per_class: int = 100,
    seed: int = 42,
    *,
    source: SuperclassSource = "bottom_up",
    policy: SuperclassPolicy = "exclude",
    images_dir: PathLike | None = None,
    exclude_triplet_images: bool = True,
    classes: tuple[str, ...] | None = None,
) -> ImageSet:
    """The paper's convexity image set: ``n_per_class`` random THINGS images per superclass (SPEC §2.1).

    Eligible concepts are those :func:`~convexlib.data.things.superclass_labels` (same ``source``/``policy``)
    labels with the class. For each class, in :data:`SUPERCLASSES` order, ``n_per_class`` images are drawn
    uniformly without replacement from all images of its eligible concepts, skipping images already drawn for
    an earlier class (so no image appears twice) and, by default, the odd-one-out task images (``*_01b.*``).

    Parameters
    ----------
    root : path, optional
        Data root (concept table and, unless ``images_dir`` is given, ``THINGS/images``).
    n_per_class : int
        Images per class (paper: 100, giving 27 x 100 = 2,700).
    seed : int
        Seed of ``numpy.random.default_rng`` (default 42).
    source, policy : str
        Passed to :func:`~convexlib.data.things.superclass_labels`.
    images_dir : path, optional
        Folder with one sub-folder per concept ``uniqueID``.
    exclude_triplet_images : bool
        Leave out the images identified as odd-one-out task images.
    classes : tuple of str, optional
        Restrict to these superclasses (default all 27). Classes still draw in SUPERCLASSES order, but a
        restricted run does not reproduce the full run's draw for its classes.

    Returns
    -------
    ImageSet
        Ordered by class (SUPERCLASSES order), then by path; ``labels`` are the class names.

    Raises
    ------
    ValueError
        A class has fewer than ``n_per_class`` eligible images (the message names it and its count).
    DataNotFoundError
        No THINGS image folder.
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    wanted = SUPERCLASSES if classes is None else tuple(classes)
    unknown = [c for c in wanted if c not in SUPERCLASSES]
    if unknown:
        raise ValueError(f"unknown superclass(es) {unknown}; choose from SUPERCLASSES")
    files = things_image_files(root, images_dir)
    concepts = load_concepts(root)
    labels = superclass_labels(root, source=source, policy=policy)
    rng = np.random.default_rng(seed)
    used: set[Path] = set()
    paths: list[Path] = []
    out_labels: list[str] = []
    missing_concepts: list[str] = []
    n_triplet_excluded = 0
    for cls in SUPERCLASSES:  # fixed order; only the wanted classes draw (a subset draws other images)
        uids = concepts.loc[labels == cls, "uniqueID"].tolist()
        pool = []
        for uid in uids:
            if uid not in files:
                missing_concepts.append(uid)
                continue
            for p in files[uid]:
                if exclude_triplet_images and is_triplet_task_image(p):
                    n_triplet_excluded += 1
                    continue
                if p not in used:
                    pool.append(p)
        pool.sort()
        if cls not in wanted:
            continue
        if len(pool) < n_per_class:
            raise ValueError(
                f"superclass {cls!r} has {len(pool)} eligible images ({len(uids)} concepts), fewer than "
                f"n_per_class={n_per_class}"
            )
        pick = np.sort(rng.choice(len(pool), size=n_per_class, replace=False))
        chosen = [pool[i] for i in pick]
        used.update(chosen)
        paths.extend(chosen)
        out_labels.extend([cls] * n_per_class)
    return ImageSet(
        tuple(paths),
        np.asarray(out_labels),
        name=f"things-superclasses-{n_per_class}",
        meta={
            "source": "THINGS images",
            "superclass_source": source,
            "policy": policy,
            "n_per_class": n_per_class,
            "seed": seed,
            "classes": list(wanted),
            "exclude_triplet_images": exclude_triplet_images,
            "triplet_images_excluded": n_triplet_excluded,
            "concepts_without_folder": missing_concepts,
        },
    )


def things_triplet_images(
    root: PathLike | None = None,
    images_dir: PathLike | None = None,
    *,
    fallback_to_01b: bool = False,
) -> ImageSet:
    """The 1,854 odd-one-out task images, one per concept, in THINGS order (the OOOA image set, SPEC §2.2).

    Looked for as ``<images_dir>/<uniqueID>.<ext>`` (gLocal's ``images/<uniqueID>.jpg`` layout), by default in
    ``<root>/things-triplets/images/``. With ``fallback_to_01b=True`` a concept without such a file takes its
    THINGS database image ``THINGS/images/<uniqueID>/<uniqueID>_01b.*`` (the task image where the database holds
    it); ``meta["from_01b"]`` lists those concepts.

    Returns
    -------
    ImageSet
        1854 paths in THINGS order; ``labels`` are the uniqueIDs.

    Raises
    ------
    DataNotFoundError
        Some concepts have no image; the message names the first ones and says where to get them.
    """
    concepts = load_concepts(root)
    folder = (
        Path(images_dir).expanduser() if images_dir is not None
        else data_root(root) / layout.THINGS_TRIPLETS_DIR / "images"
    )  # fmt: skip
    by_stem: dict[str, Path] = {}
    if folder.is_dir():
        for p in _image_files(folder):
            by_stem.setdefault(p.stem, p)
    db_files: dict[str, list[Path]] = {}
    if fallback_to_01b:
        try:
            db_files = things_image_files(root)
        except DataNotFoundError:
            db_files = {}
    paths, from_01b, missing = [], [], []
    for uid in concepts["uniqueID"]:
        if uid in by_stem:
            paths.append(by_stem[uid])
            continue
        first = [p for p in db_files.get(uid, []) if is_triplet_task_image(p)]
        if first:
            paths.append(first[0])
            from_01b.append(uid)
        else:
            missing.append(uid)
    if missing:
        raise DataNotFoundError(
            f"no odd-one-out task image for {len(missing)} of 1854 concepts (first: {missing[:5]}) in {folder}"
            + (" or as THINGS/images/<uniqueID>/<uniqueID>_01b.*" if fallback_to_01b else "")
            + ". Place the 1,854 reference images of the THINGS odd-one-out task (THINGS-data, https://osf.io/f5rn6/)"
            " as <uniqueID>.jpg in that folder; see data/README.md."
        )
    return ImageSet(
        tuple(paths),
        concepts["uniqueID"].to_numpy(dtype=str),
        name="things-triplet-images",
        meta={"source": "THINGS odd-one-out task images", "folder": str(folder), "from_01b": from_01b},
    )


def imagenet_things_images(
    root: PathLike | None = None,
    source: SuperclassSource = "bottom_up",
    policy: SuperclassPolicy = "exclude",
    min_per_class: int = 1,
) -> ImageSet:
    """ImageNet photos of THINGS concepts, labelled with their superclass (offline stand-in for THINGS images).

    ``imagenet-sample/things_imagenet_overlap.tsv`` lists the 334 THINGS concepts whose WordNet id is an
    ImageNet-1k class, each with one real ImageNet photo. Labels come from
    :func:`~convexlib.data.things.superclass_labels` with the same ``source``/``policy``; concepts without a
    label are left out, then classes with fewer than ``min_per_class`` photos. With the defaults: 188 photos
    in 25 classes. These are ImageNet photos, not the THINGS stimuli.

    Returns
    -------
    ImageSet
        In THINGS order of the concepts; ``meta["things_index"]`` holds each photo's THINGS index.
    """
    if min_per_class < 1:
        raise ValueError(f"min_per_class must be >= 1, got {min_per_class}")
    path = data_file(layout.IMAGENET_OVERLAP, root)
    table = pd.read_csv(path, sep="\t", dtype={"things_index": np.int64}, keep_default_na=False)
    for col in ("things_index", "uniqueID", "image_file"):
        if col not in table.columns:
            raise ValueError(f"{path}: missing column {col!r}")
    concepts = load_concepts(root)
    idx = table["things_index"].to_numpy()
    bad = np.flatnonzero((idx < 0) | (idx >= layout.N_THINGS))
    if len(bad):
        raise ValueError(f"{path}: line {bad[0] + 2}: things_index {idx[bad[0]]} outside 0..{layout.N_THINGS - 1}")
    mismatch = np.flatnonzero(concepts["uniqueID"].to_numpy()[idx] != table["uniqueID"].to_numpy())
    if len(mismatch):
        raise ValueError(f"{path}: line {mismatch[0] + 2}: uniqueID does not match things_index in the concept table")
    labels = superclass_labels(root, source=source, policy=policy).to_numpy()[idx]
    table = table.assign(label=labels)
    table = table[table["label"].notna()]
    counts = table["label"].value_counts()
    table = table[table["label"].map(counts) >= min_per_class].sort_values("things_index", kind="stable")
    folder = data_root(root) / layout.IMAGENET_SAMPLE_DIR
    return ImageSet(
        tuple(folder / f for f in table["image_file"]),
        table["label"].to_numpy(dtype=str),
        name="imagenet-things",
        meta={
            "source": "ImageNet photos of THINGS concepts (imagenet-sample)",
            "superclass_source": source,
            "policy": policy,
            "min_per_class": min_per_class,
            "things_index": table["things_index"].to_numpy().tolist(),
        },
    )


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar10_images(root: PathLike | None = None, n_per_class: int | None = None, seed: int = 42) -> ImageSet:
    """The 10,000 CIFAR-10 test images (32x32), or a seeded subset of ``n_per_class`` per class.

    Returns
    -------
    ImageSet
        Ordered by class (standard CIFAR-10 order, which is alphabetical) then file name; labels are class names.
    """
    folder = data_root(root) / layout.CIFAR10_TEST_DIR
    if not folder.is_dir():
        raise DataNotFoundError(f"CIFAR-10 test folder {folder} does not exist; see data/README.md")
    if n_per_class is not None and n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1 or None, got {n_per_class}")
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    labels: list[str] = []
    for cls in CIFAR10_CLASSES:
        sub = folder / cls
        if not sub.is_dir():
            raise DataNotFoundError(f"CIFAR-10 class folder {sub} is missing")
        files = _image_files(sub)
        if n_per_class is not None:
            if len(files) < n_per_class:
                raise ValueError(f"{sub} holds {len(files)} images, fewer than n_per_class={n_per_class}")
            files = [files[i] for i in np.sort(rng.choice(len(files), size=n_per_class, replace=False))]
        paths.extend(files)
        labels.extend([cls] * len(files))
    return ImageSet(
        tuple(paths),
        np.asarray(labels),
        name="cifar10-test" if n_per_class is None else f"cifar10-test-{n_per_class}",
        meta={"source": "CIFAR-10 test set", "n_per_class": n_per_class, "seed": seed},
    )


def kriegeskorte_images(root: PathLike | None = None, label: str = "category") -> ImageSet:
    """The 92 Kriegeskorte et al. (2008) object images, 175x175, in their original order.

    Parameters
    ----------
    label : str
        ``"category"`` (default; human bodypart, human face, nonhuman bodypart, nonhuman face, natural
        inanimate, artificial inanimate), ``"animacy"`` ("animate"/"inanimate" from the ``animate`` vector), or
        any other column of ``kriegeskorte92/stimuli.tsv`` (0/1 columns ``human``, ``face``, ``animal``,
        ``natural``, ``animate``, ``body``, ...; the category-vector columns that repeat a name are read as
        ``human.1`` and ``face.1``).

    Returns
    -------
    ImageSet
    """
    path = data_file(layout.KRIEGESKORTE_STIMULI, root)
    table = pd.read_csv(path, sep="\t", keep_default_na=False)
    if len(table) != 92 or not np.array_equal(table["index"].to_numpy(), np.arange(92)):
        raise ValueError(f"{path}: expected 92 rows with index 0..91")
    if label == "animacy":
        values = np.where(table["animate"].to_numpy() == 1, "animate", "inanimate")
    elif label in table.columns and label not in ("index", "image_file"):
        values = table[label].to_numpy()
    else:
        options = ["animacy"] + [c for c in table.columns if c not in ("index", "image_file")]
        raise ValueError(f"label must be one of {options}, got {label!r}")
    folder = path.parent
    return ImageSet(
        tuple(folder / f for f in table["image_file"]),
        values,
        name=f"kriegeskorte92-{label}",
        meta={"source": "Kriegeskorte et al. 2008, 92 images", "label": label},
    )
