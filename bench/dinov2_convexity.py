"""Issue 5, part 3: per-block graph convexity of the offline DINOv2 ViT-S/14 on real photos, both poolings.

    CONVEXLIB_DATA=../shared/data .venv/bin/python bench/dinov2_convexity.py [--min-class-size 10] [--per-class 100]

(a) ImageNet photos of THINGS concepts labelled by the project's superclass function (bottom-up, exclude);
(b) CIFAR-10 test images, ``--per-class`` per class (seeded draw). Classes below ``--min-class-size`` are dropped and
listed. Both poolings (``cls``, ``mean_patch``) come from one forward pass per batch; features are cached.
Prints Markdown tables (block x pooling) with n per class.
"""

from __future__ import annotations

import argparse

import numpy as np

from convexlib import data as D
from convexlib.convexity import graph_convexity
from convexlib.features import extract


def table(name: str, image_set, min_size: int, seed: int) -> None:
    labels = np.asarray(image_set.labels)
    vals, counts = np.unique(labels, return_counts=True)
    keep_cls = {v for v, c in zip(vals, counts) if c >= min_size}
    dropped = {str(v): int(c) for v, c in zip(vals, counts) if c < min_size}
    rows = np.flatnonzero(np.isin(labels, list(keep_cls)))
    sizes = {str(v): int(c) for v, c in zip(vals, counts) if v in keep_cls}
    feats = extract("dinov2-s-imgfocus", image_set, pooling=["cls", "mean_patch"], device="cpu")
    print(f"\n### {name}: {len(rows)} images in {len(sizes)} classes (n per class: {sizes})")
    print(f"dropped (< {min_size}): {dropped or 'none'}\n")
    print("| block | cls [%] | mean_patch [%] | permuted-label baseline (cls) [%] |")
    print("|---|---|---|---|")
    for layer in range(1, 13):
        r = {p: graph_convexity(feats[p][layer][rows], labels[rows], seed=seed, baseline=(p == "cls"))
             for p in ("cls", "mean_patch")}
        print(f"| {layer} | {r['cls'].score:.1f} ± {r['cls'].sem:.1f} | {r['mean_patch'].score:.1f} ± "
              f"{r['mean_patch'].sem:.1f} | {r['cls'].baseline_score:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--min-class-size", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    table("ImageNet photos of THINGS concepts (27 superclasses, bottom-up, exclude)", D.imagenet_things_images(),
          a.min_class_size, a.seed)
    table(f"CIFAR-10 test, {a.per_class} per class", D.cifar10_images(n_per_class=a.per_class, seed=a.seed),
          a.min_class_size, a.seed)


if __name__ == "__main__":
    main()
