"""convexlib: graph convexity, odd-one-out alignment and their correlation, layer by layer.

Companion library to Dorszewski, Tětková, Linhardt & Hansen, *Connecting Concept Convexity and
Human-Machine Alignment in Deep Neural Networks* (NLDL 2025, arXiv 2409.06362).

Modules
-------
convexity   graph convexity of labelled point clouds (kNN graph, shortest paths)
alignment   odd-one-out accuracy (OOOA) on triplet judgements, noise ceilings
stats       correlations, bootstrap intervals, layer positions and depth
data        THINGS concepts, superclasses, triplets, image sets, checksummed fetch
models      model registry (HF, timm, offline MiniLM and DINOv2) and pooling rules
features    layer-wise extraction with a disk cache
transform   the naive affine alignment transform (gLocal-style) with object-wise CV
"""

__version__ = "0.1.0"
