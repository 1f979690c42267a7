"""Data layer: THINGS concepts and superclasses, human triplets, image sets and the checksummed fetch.

Notebooks never parse data files themselves; they call the functions re-exported here. The data root is an
argument (``root=``) or ``$CONVEXLIB_DATA``; its layout is described in ``data/README.md`` and
:mod:`convexlib.data.layout`.
"""

from .fetch import GROUPS, REGISTRY, FetchError, RemoteFile, derive_kriegeskorte92, fetch, verify
from .images import (
    CIFAR10_CLASSES,
    THINGS_IMAGES_HOWTO,
    cifar10_images,
    imagenet_things_images,
    is_triplet_task_image,
    kriegeskorte_images,
    things_image_files,
    things_superclass_images,
    things_triplet_images,
)
from .sets import ImageDataset, ImageSet, TextSet, UnreadableImageError
from .things import (
    SUPERCLASSES,
    load_concepts,
    load_sortindex,
    load_vice_embedding,
    raw_to_things,
    superclass_labels,
    superclass_membership,
)
from .triplets import (
    THINGS_TRIPLETS_HOWTO,
    Triplets,
    kriegeskorte_triplets,
    load_human_test_triplets,
    load_things_triplets,
    triplets_from_dissimilarity,
)

__all__ = [
    "ImageSet",
    "TextSet",
    "ImageDataset",
    "UnreadableImageError",
    "SUPERCLASSES",
    "load_concepts",
    "superclass_labels",
    "superclass_membership",
    "load_sortindex",
    "raw_to_things",
    "load_vice_embedding",
    "Triplets",
    "load_human_test_triplets",
    "load_things_triplets",
    "kriegeskorte_triplets",
    "triplets_from_dissimilarity",
    "THINGS_TRIPLETS_HOWTO",
    "things_superclass_images",
    "things_triplet_images",
    "things_image_files",
    "is_triplet_task_image",
    "imagenet_things_images",
    "cifar10_images",
    "CIFAR10_CLASSES",
    "kriegeskorte_images",
    "THINGS_IMAGES_HOWTO",
    "fetch",
    "verify",
    "derive_kriegeskorte92",
    "FetchError",
    "RemoteFile",
    "REGISTRY",
    "GROUPS",
]
