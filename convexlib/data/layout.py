"""The data-root layout: where every file lives, relative to the data root.

The layout is the one of ``../shared/data`` (see ``data/README.md``). Every loader builds its paths from these
constants, so the layout is written down once.
"""

from __future__ import annotations

# THINGS concept table (ViCCo-Group/thingsvision)
THINGS_CONCEPTS = "thingsvision/things_concepts.tsv"
THINGS_ITEM_NAMES = "thingsvision/item_names.tsv"

# VICE repository (LukasMut/VICE): 27-category matrix, 2020 noise-ceiling triplets, order permutation, embedding
CATEGORY_MAT_MANUAL = "vice/category_mat_manual.tsv"
TEST_TRIPLETS = "vice/test_triplets.csv"
SORTINDEX = "vice/sortindex.txt"
VICE_EMBEDDING = "vice/final_embedding.npy"

# THINGS-data repository (THINGS+ categories, ratings)
THINGSPLUS_CATEGORIES = "things-data/Categories_final_20200131.tsv"
THINGS_ANIMACY = "things-data/animacy.csv"
THINGS_SIZE = "things-data/size_fixed.csv"

# Full THINGS triplet sets (not offline): THINGS-data csv, SPoSE text files or gLocal .npy files
THINGS_TRIPLETS_DIR = "things-triplets"
THINGS_TRIPLETS_CSV = "things-triplets/triplets_large_final_correctednc_correctedorder.csv"

# THINGS images (password-protected download, placed by hand): THINGS/images/<uniqueID>/<file>.jpg
THINGS_IMAGES_DIR = "THINGS/images"

# Offline image sets
IMAGENET_SAMPLE_DIR = "imagenet-sample"
IMAGENET_OVERLAP = "imagenet-sample/things_imagenet_overlap.tsv"
CIFAR10_TEST_DIR = "cifar10/test"
KRIEGESKORTE_DIR = "kriegeskorte92"
KRIEGESKORTE_STIMULI = "kriegeskorte92/stimuli.tsv"
KRIEGESKORTE_SIMJUDGE = "kriegeskorte92/rdms_behav_simjudge.npy"
KRIEGESKORTE_SUPPL_MAT = "kriegeskorte92/Kriegeskorte_Neuron2008_supplementalData.mat"
KRIEGESKORTE_BEHAV_MAT = "kriegeskorte92/92_behavRDMs.mat"

# gLocal transforms
GLOCAL_TRANSFORMS_DIR = "glocal/transforms"

# hashes recorded at first download for files whose hash cannot be pinned in advance (see fetch.py)
RECORDED_HASHES = "fetch-hashes.json"

N_THINGS = 1854
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
