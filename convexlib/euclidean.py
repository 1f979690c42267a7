"""Euclidean convexity: interpolate between same-class points at a layer and classify (SPEC §4.2).

Definition (Tětková et al.; ``nnconvexity.euclidean``)
------------------------------------------------------
For a class A and an unordered pair {x1, x2} of its points at layer l (the full token matrix, shape (T, D)),
take the ``n_sampled`` interior points of the segment

    x_λ = λ·x1 + (1 − λ)·x2,   λ = i · (1 / (n_sampled + 1)),   i = 1..n_sampled   (endpoints excluded),

run each through the rest of the network (blocks l+1..L), the final norm, the pooling and a classifier, and
score the pair by the share of the points predicted as A. Up to ``n_pairs`` unordered pairs are drawn per
class without replacement (all of them when there are fewer). A class's score is the mean of its pair scores
(in percent); the layer's score is the mean over classes. The mean over all pooled pairs (``nnconvexity``'s
number) is reported too.

Batching
--------
The reference code makes one model call per pair (``n_sampled`` points). Here the interpolated points of all
pairs of all classes form one stream, cut into batches of ``batch_size`` points regardless of pair
boundaries: one forward per batch. Token states may be stored as float16; interpolation is done in float32
with the reference's exact arithmetic (``λ`` and ``1 − λ`` are formed in float64 and rounded to float32).

Forward from a layer
--------------------
:func:`forward_from_layer` works on the module structure of HF transformers vision encoders: ViT
(``ViTModel``), DINOv2 (``Dinov2Model``, also the offline ``dinov2-s-imgfocus``), BEiT (``BeitModel``, with
per-block or shared relative position bias) and data2vec-vision (``Data2VecVisionModel``). It runs the block
modules after ``layer``, then reads out what a classification head of that family sees (``readout="auto"``):

========================  ======================================================================================
family                    head input (the HF ``*ForImageClassification`` convention)
========================  ======================================================================================
ViT                       ``layernorm(tokens)[:, 0]`` (normed CLS)
DINOv2                    ``cat(z[:, 0], z[:, 1:].mean(1))`` with ``z = layernorm(tokens)`` (normed CLS + mean
                          of normed patch tokens, 2·D)
BEiT / data2vec, mean     ``pooler.layernorm(tokens[:, 1:].mean(1))``; a module loaded without a pooler
pooling                   (``Data2VecVisionModel`` defaults to none) has no such norm and returns the plain mean
BEiT / data2vec, no mean  ``layernorm(tokens)[:, 0]``
pooling
========================  ======================================================================================

Other readouts: ``"cls"``, ``"mean_patch"``, ``"cls_mean_patch"`` with the family's final norm where HF places
it. Other model families (timm, DeiT, text models) raise ``NotImplementedError``.

Classifiers
-----------
:class:`LinearClassifier` maps head inputs to one of its ``classes``. :func:`head_classifier` takes the
checkpoint's own head from an HF ``*ForImageClassification`` module (its ``id2label`` names, or classes you
give). :func:`linear_probe` trains a multinomial logistic-regression probe on the frozen last-layer head
inputs of a training set (:func:`fit_logistic`: L2 penalty ``C`` as in scikit-learn, features standardised,
full-batch L-BFGS in float64 from zero, hence deterministic), caches it with :mod:`convexlib.cache` and
reports its test accuracy. The reference code instead trains a linear layer with the HF Trainer (lr 5e-5,
3 epochs, batch 64); for frozen features the convex logistic-regression optimum is the reproducible analogue.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from . import models as _models
from .cache import array_checksum, cached_arrays
from .alignment import check_count
from .convexity import encode_labels
from .data.sets import ImageDataset, ImageSet
from .models import LoadedModel, ModelSpec

__all__ = [
    "READOUTS",
    "SUPPORTED_FAMILIES",
    "EuclideanConvexityResult",
    "LinearClassifier",
    "segment_lambdas",
    "interpolate_segment",
    "sample_unordered_pairs",
    "forward_from_layer",
    "resolve_readout",
    "head_dim",
    "token_states",
    "head_features",
    "fit_logistic",
    "train_linear_probe",
    "linear_probe",
    "head_classifier",
    "stratified_split",
    "euclidean_convexity",
]

READOUTS = ("auto", "cls", "mean_patch", "cls_mean_patch")
SUPPORTED_FAMILIES = ("vit", "dinov2", "beit", "data2vec-vision")

ModelLike = str | ModelSpec | LoadedModel | nn.Module


# ------------------------------------------------------------------------------------------------------------------
# Segments and pairs
# ------------------------------------------------------------------------------------------------------------------


def segment_lambdas(n_sampled: int) -> np.ndarray:
    """The interpolation weights ``λ_i = i · (1 / (n_sampled + 1))``, i = 1..n_sampled, float64.

    Formed exactly as the reference code does (``(i + 1) * (1 / (n + 1))``), so float32 interpolation is
    bit-identical to it.
    """
    n_sampled = check_count(n_sampled, "n_sampled", 1)
    step = 1 / (int(n_sampled) + 1)
    return np.array([(i + 1) * step for i in range(int(n_sampled))], dtype=np.float64)


def interpolate_segment(x1: torch.Tensor, x2: torch.Tensor, lambdas: Sequence[float] | np.ndarray) -> torch.Tensor:
    """Points ``λ·x1 + (1 − λ)·x2`` for each λ, computed in float32.

    Parameters
    ----------
    x1, x2 : Tensor of shape (..., T, D) or (T, D), same shape
        Broadcast against ``lambdas`` along a new leading axis when they have the same shape.
    lambdas : sequence of float, length m

    Returns
    -------
    Tensor of shape (m, *x1.shape), float32
    """
    if x1.shape != x2.shape:
        raise ValueError(f"segment ends must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    lam = np.asarray(lambdas, dtype=np.float64).reshape(-1)
    a = torch.as_tensor(lam.astype(np.float32), device=x1.device).view(-1, *([1] * x1.ndim))
    b = torch.as_tensor((1.0 - lam).astype(np.float32), device=x1.device).view(-1, *([1] * x1.ndim))
    return a * x1.float().unsqueeze(0) + b * x2.float().unsqueeze(0)


def _combination(q: np.ndarray, n: int) -> np.ndarray:
    """Pairs (i, j), i < j, at positions ``q`` of ``itertools.combinations(range(n), 2)``; shape (len(q), 2)."""
    rows = np.arange(n, dtype=np.int64)
    offsets = rows * (2 * n - rows - 1) // 2  # position of (i, i+1)
    i = np.searchsorted(offsets, q, side="right") - 1
    j = q - offsets[i] + i + 1
    return np.column_stack([i, j]).astype(np.int64)


def sample_unordered_pairs(n: int, max_pairs: int, rng: np.random.Generator | np.random.RandomState) -> np.ndarray:
    """Draw up to ``max_pairs`` distinct unordered pairs {i, j}, i < j, from ``n`` items without replacement.

    Parameters
    ----------
    n : int
        Number of items (>= 2).
    max_pairs : int
    rng : numpy Generator, or a legacy ``RandomState``
        With a ``RandomState`` the draw is ``rng.choice(n (n - 1) / 2, m, replace=False)`` over the positions of
        ``itertools.combinations``, as the reference code does with ``np.random.choice``; the pairs are then in
        draw order. With a Generator the drawn positions are sorted.

    Returns
    -------
    ndarray of shape (m, 2), int64, with m = min(max_pairs, n (n - 1) / 2) and i < j in each row. All pairs in
    ``itertools.combinations`` order when ``max_pairs`` covers them (Generator only; a RandomState always
    permutes, as the reference does).
    """
    if n < 2:
        raise ValueError(f"need at least 2 items to form a pair, got {n}")
    max_pairs = check_count(max_pairs, "max_pairs", 1)
    total = n * (n - 1) // 2
    m = min(int(max_pairs), total)
    if isinstance(rng, np.random.RandomState):
        q = np.asarray(rng.choice(total, m, replace=False), dtype=np.int64)
    elif m >= total:
        q = np.arange(total, dtype=np.int64)
    else:
        q = np.sort(rng.choice(total, size=m, replace=False)).astype(np.int64)
    return _combination(q, n)


# ------------------------------------------------------------------------------------------------------------------
# Model structure
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class _Net:
    """What forward-from-layer needs to know about a module."""

    base: nn.Module
    family: str
    blocks: list
    prefix: int
    name: str
    device: torch.device
    head_module: nn.Module | None  # the *ForImageClassification wrapper, when given
    loaded: LoadedModel | None

    @property
    def n_layers(self) -> int:
        return len(self.blocks)


def _model_type(module: nn.Module) -> str:
    return str(getattr(getattr(module, "config", None), "model_type", "") or "")


def _resolve(model: ModelLike, device: str = "auto") -> _Net:
    loaded: LoadedModel | None = None
    if isinstance(model, (str, ModelSpec)):
        loaded = _models.load_model(model, device=device)
    elif isinstance(model, LoadedModel):
        loaded = model
    if loaded is not None:
        if loaded.modality != "image":
            raise NotImplementedError(f"Euclidean convexity is implemented for image models; {loaded.spec.name} is a "
                                      f"{loaded.modality} model")
        module = loaded.module
        name = loaded.spec.name
    elif isinstance(model, nn.Module):
        module = model
        name = type(model).__name__
    else:
        raise TypeError("model must be a registry name, ModelSpec, LoadedModel or HF module, got "
                        f"{type(model).__name__}")
    head_module = None
    base = module
    wrapper = getattr(module, "base_model", module) is not module
    if wrapper and isinstance(getattr(module, "classifier", None), nn.Linear):
        head_module = module
        base = module.base_model
    family = _model_type(base)
    if family not in SUPPORTED_FAMILIES:
        kind = "a timm model" if hasattr(base, "forward_intermediates") else f"model_type {family!r}"
        raise NotImplementedError(
            f"forward from a layer is implemented for HF {', '.join(SUPPORTED_FAMILIES)} encoders; {name} is {kind}"
        )
    blocks = getattr(base, "layers", None)
    if not isinstance(blocks, nn.ModuleList):
        blocks = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(blocks, nn.ModuleList):
        raise NotImplementedError(f"cannot find the transformer blocks of {name} (neither .layers nor .encoder.layer)")
    config = base.config
    if int(getattr(config, "num_register_tokens", 0) or 0):
        raise NotImplementedError(f"{name} has register tokens; only CLS-prefixed encoders are supported")
    params = list(base.parameters())
    dev = params[0].device if params else torch.device("cpu")
    prefix = loaded.prefix_tokens if loaded is not None else 1
    return _Net(base, family, list(blocks), int(prefix), name, dev, head_module, loaded)


def _resolution(net: _Net, n_tokens: int) -> tuple[int, int]:
    """Input image size (H, W) whose patch grid gives ``n_tokens - prefix`` patches."""
    config = net.base.config
    p = config.patch_size if isinstance(config.patch_size, int) else config.patch_size[0]
    size = config.image_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    n_patch = n_tokens - net.prefix
    if (h // p) * (w // p) == n_patch:
        return int(h), int(w)
    side = math.isqrt(n_patch)
    if side * side != n_patch:
        raise ValueError(f"{net.name}: {n_tokens} tokens do not form a square patch grid after {net.prefix} "
                         "prefix tokens")
    return side * p, side * p


def _shared_bias(net: _Net, n_tokens: int, resolution: tuple[int, int]) -> torch.Tensor | None:
    """The relative position bias shared by all blocks (BEiT/data2vec configs with a shared bias), else None."""
    base = net.base
    mod = getattr(base, "shared_position_bias", None)
    if mod is None:
        enc = getattr(base, "encoder", None)
        if enc is not None and getattr(enc, "has_relative_position_bias", False):
            mod = enc.relative_position_bias
    if mod is None:
        return None
    p = base.config.patch_size if isinstance(base.config.patch_size, int) else base.config.patch_size[0]
    window = (resolution[0] // p, resolution[1] // p)
    return mod(window, interpolate_pos_encoding=False, dim_size=n_tokens)


def _block_kwargs(block: nn.Module, family: str, bias: torch.Tensor | None, resolution: tuple[int, int]) -> dict:
    if family in ("vit", "dinov2"):
        return {}
    params = inspect.signature(block.forward).parameters
    kw: dict[str, Any] = {}
    if "resolution" in params:
        kw["resolution"] = resolution
    if bias is not None:
        key = "relative_position_bias" if "relative_position_bias" in params else "attention_mask"
        kw[key] = bias
    return kw


def _final_tokens(net: _Net, x: torch.Tensor) -> torch.Tensor:
    return net.base.layernorm(x)


def _auto_readout(net: _Net) -> str:
    if net.family == "vit":
        return "cls"
    if net.family == "dinov2":
        return "cls_mean_patch"
    return "mean_patch" if getattr(net.base.config, "use_mean_pooling", False) else "cls"


def _readout(net: _Net, tokens: torch.Tensor, readout: str) -> torch.Tensor:
    if readout == "auto":
        readout = _auto_readout(net)
    if readout not in READOUTS[1:]:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    mean_pool_norm = net.family in ("beit", "data2vec-vision") and getattr(net.base.config, "use_mean_pooling", False)
    if mean_pool_norm:
        pooler = getattr(net.base, "pooler", None)
        pnorm = getattr(pooler, "layernorm", None) if pooler is not None else None
        z = net.base.layernorm(tokens)  # Identity with mean pooling
        cls = z[:, 0]
        mean = z[:, net.prefix:].mean(dim=1)
        if pnorm is not None:
            mean = pnorm(mean)
    else:
        z = _final_tokens(net, tokens)
        cls = z[:, 0]
        mean = z[:, net.prefix:].mean(dim=1)
    if readout == "cls":
        return cls
    if readout == "mean_patch":
        return mean
    return torch.cat([cls, mean], dim=1)


def _model_of(net: _Net) -> ModelLike:
    if net.loaded is not None:
        return net.loaded
    return net.head_module if net.head_module is not None else net.base


def _check_layer(net: _Net, layer: int) -> int:
    return _models.validate_layers(layer, net.n_layers, net.name)[0]


def _forward_net(net: _Net, states: torch.Tensor, layer: int, readout: str) -> torch.Tensor:
    if states.ndim != 3:
        raise ValueError(f"token states must have shape (B, T, D), got {tuple(states.shape)}")
    x = states.to(net.device, torch.float32)
    n_tokens = x.shape[1]
    res = _resolution(net, n_tokens)
    bias = _shared_bias(net, n_tokens, res)
    for block in net.blocks[layer:]:
        out = block(x, **_block_kwargs(block, net.family, bias, res))
        x = out[0] if isinstance(out, (tuple, list)) else out
    return _readout(net, x, readout)


def forward_from_layer(model: ModelLike, states: torch.Tensor, layer: int, *, readout: str = "auto") -> torch.Tensor:
    """Head input from token states after block ``layer``: blocks layer+1..L, final norm, pooling.

    Parameters
    ----------
    model : LoadedModel, registry name, ModelSpec or HF module
        An HF ViT / DINOv2 / BEiT / data2vec-vision encoder, or its ``*ForImageClassification`` wrapper.
    states : Tensor of shape (B, T, D)
        Block ``layer`` outputs (HF ``hidden_states[layer]``, before any final norm); any float dtype.
    layer : int
        1..L. ``layer = L`` runs no block, only the final norm and the readout.
    readout : {"auto", "cls", "mean_patch", "cls_mean_patch"}
        See the module docstring.

    Returns
    -------
    Tensor of shape (B, d_head), float32, on the module's device; computed under :func:`torch.inference_mode`.
    """
    net = _resolve(model)
    layer = _check_layer(net, layer)
    with torch.inference_mode():
        return _forward_net(net, states, layer, readout)


def resolve_readout(model: ModelLike, readout: str = "auto") -> str:
    """The readout name ``"auto"`` stands for with this model (``"cls"``, ``"mean_patch"`` or ``"cls_mean_patch"``)."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    return _auto_readout(_resolve(model)) if readout == "auto" else readout


def head_dim(model: ModelLike, readout: str = "auto") -> int:
    """Width of the head input for ``readout`` (D, or 2·D for ``cls_mean_patch``)."""
    net = _resolve(model)
    r = _auto_readout(net) if readout == "auto" else readout
    if r not in READOUTS[1:]:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    d = int(net.base.config.hidden_size)
    return 2 * d if r == "cls_mean_patch" else d


# ------------------------------------------------------------------------------------------------------------------
# Extraction of token states and head inputs
# ------------------------------------------------------------------------------------------------------------------


def _pixel_batches(net: _Net, data: ImageSet | torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"pixel input must have shape (N, 3, H, W), got {tuple(data.shape)}")
        for s in range(0, len(data), batch_size):
            yield data[s:s + batch_size]
        return
    if not isinstance(data, ImageSet):
        raise TypeError(f"data must be an ImageSet or a pixel tensor (N, 3, H, W), got {type(data).__name__}")
    if net.loaded is None:
        raise ValueError("an ImageSet needs the model's preprocessing: pass a LoadedModel (or a registry name), "
                         "or pass preprocessed pixel tensors")
    ds = ImageDataset(data, net.loaded.preprocess, on_error="raise")
    for s in range(0, len(ds), batch_size):
        yield torch.stack([ds[i][0] for i in range(s, min(s + batch_size, len(ds)))])


def _hidden(net: _Net, pixels: torch.Tensor, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
    if net.loaded is not None and net.loaded.spec.norm == "none":
        states, _ = net.loaded.hidden_states(pixels, layers)
        return states
    hs = net.base(pixel_values=pixels.to(net.device), output_hidden_states=True).hidden_states
    if hs is None or len(hs) != net.n_layers + 1:
        raise RuntimeError(f"{net.name}: expected {net.n_layers + 1} hidden states")
    return {layer: hs[layer] for layer in layers}


def token_states(
    model: ModelLike,
    data: ImageSet | torch.Tensor,
    layers: int | Iterable[int],
    *,
    dtype: Any = np.float32,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[int, np.ndarray]:
    """Full token matrices after the requested blocks, for every item (one forward pass per batch).

    Parameters
    ----------
    model : LoadedModel, registry name, ModelSpec or HF module
    data : ImageSet (needs a LoadedModel/name for its preprocessing) or Tensor of shape (N, 3, H, W)
    layers : int or iterable of int in 1..L
    dtype : numpy dtype
        Storage type; ``np.float16`` halves memory (1,000 × 257 × 384 tokens: 395 MB float32, 197 MB float16).
        Euclidean convexity interpolates in float32 either way.
    batch_size : int
    progress : bool

    Returns
    -------
    dict layer -> ndarray of shape (N, T, D), ``dtype``; block outputs before the final norm (HF
    ``hidden_states[layer]``).
    """
    net = _resolve(model)
    layers_t = _models.validate_layers(layers, net.n_layers, net.name)
    if net.loaded is not None and net.loaded.spec.norm != "none":
        raise ValueError(f"{net.name} has norm={net.loaded.spec.norm!r}; token states must be raw block outputs "
                         "(load the model with norm='none')")
    n = len(data)
    if n == 0:
        raise ValueError("data is empty")
    out: dict[int, np.ndarray] = {}
    bar = tqdm(total=n, desc=f"token states [{net.name}]", unit="item", disable=not progress, leave=False)
    start = 0
    try:
        with torch.inference_mode():
            for pixels in _pixel_batches(net, data, batch_size):
                states = _hidden(net, pixels, layers_t)
                for layer in layers_t:
                    s = states[layer].to("cpu", torch.float32).numpy()
                    if layer not in out:
                        out[layer] = np.empty((n, *s.shape[1:]), dtype=dtype)
                    out[layer][start:start + len(s)] = s
                start += len(pixels)
                bar.update(len(pixels))
    finally:
        bar.close()
    for layer, a in out.items():
        if not np.isfinite(a).all():
            raise ValueError(f"{net.name}: non-finite token states at layer {layer}")
    return out


def _identity(net: _Net) -> dict[str, Any]:
    if net.loaded is not None:
        return _models.model_identity(net.loaded)
    h = hashlib.sha256()
    for name, t in net.base.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(repr((str(t.dtype), tuple(t.shape))).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"class": type(net.base).__name__, "config": net.base.config.to_dict(), "weights_sha256": h.hexdigest()}


def head_features(
    model: ModelLike,
    data: ImageSet | torch.Tensor,
    *,
    readout: str = "auto",
    batch_size: int = 32,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> np.ndarray:
    """What a classification head sees for each item: last block, final norm, readout (see module docstring).

    Equals :func:`forward_from_layer` at ``layer = L`` applied to the last block's token states. Cached (for an
    :class:`ImageSet`) under ``<cache_dir>/euclidean/head_features`` keyed on the model identity, readout and the
    data's content fingerprint.

    Returns
    -------
    ndarray of shape (N, d_head), float32
    """
    net = _resolve(model)
    r = _auto_readout(net) if readout == "auto" else readout
    if r not in READOUTS[1:]:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")

    def compute() -> dict[str, np.ndarray]:
        rows = []
        bar = tqdm(total=len(data), desc=f"head features [{net.name}]", unit="item", disable=not progress,
                   leave=False)
        try:
            with torch.inference_mode():
                for pixels in _pixel_batches(net, data, batch_size):
                    last = _hidden(net, pixels, (net.n_layers,))[net.n_layers]
                    rows.append(_readout(net, last.float(), r).to("cpu", torch.float32).numpy())
                    bar.update(len(pixels))
        finally:
            bar.close()
        feats = np.concatenate(rows)
        if not np.isfinite(feats).all():
            raise ValueError(f"{net.name}: non-finite head features")
        return {"features": feats}

    if not cache or not isinstance(data, ImageSet):
        return compute()["features"]
    key = {
        "kind": "head_features", "schema": 1, "model": _identity(net), "readout": r,
        "data": {"fingerprint": data.fingerprint(), "n": len(data)}, "convexlib": __version__,
    }
    return cached_arrays(key, "euclidean/head_features", compute, cache_dir=cache_dir)["features"]


# ------------------------------------------------------------------------------------------------------------------
# Classifiers
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearClassifier:
    """A linear classifier on head inputs.

    Attributes
    ----------
    weight : ndarray of shape (K, d), float32
    bias : ndarray of shape (K,), float32
    classes : tuple of length K
        The label each output unit stands for (labels may repeat, e.g. ImageNet's two "crane" units).
    readout : str
        The head input it expects (see :func:`forward_from_layer`); ``"auto"`` means the family's default.
    info : dict
        JSON-able provenance: kind ("head" or "probe"), accuracies, hyper-parameters.
    """

    weight: np.ndarray
    bias: np.ndarray
    classes: tuple
    readout: str = "auto"
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        w = np.asarray(self.weight, dtype=np.float32)
        b = np.asarray(self.bias, dtype=np.float32).reshape(-1)
        if w.ndim != 2 or b.shape != (w.shape[0],):
            raise ValueError(f"weight must be (K, d) and bias (K,), got {w.shape} and {b.shape}")
        if len(self.classes) != w.shape[0]:
            raise ValueError(f"{len(self.classes)} classes for {w.shape[0]} output units")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ValueError("classifier weights must be finite")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "info", dict(self.info))

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, features: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Logits, shape (B, K), float32, for head inputs of shape (B, d)."""
        x = torch.as_tensor(features)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"features must have shape (B, {self.in_features}), got {tuple(x.shape)}")
        w = torch.from_numpy(self.weight).to(x.device)
        b = torch.from_numpy(self.bias).to(x.device)
        return x.float() @ w.T + b

    def predict_units(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Index of the winning output unit per row, shape (B,), int64."""
        return self.logits(features).argmax(dim=1).to("cpu").numpy().astype(np.int64)

    def predict(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Predicted label per row, shape (B,), object array."""
        cls = np.empty(len(self.classes), dtype=object)
        cls[:] = list(self.classes)
        return cls[self.predict_units(features)]


def head_classifier(model: nn.Module, classes: Sequence[Hashable] | None = None) -> LinearClassifier:
    """The checkpoint's own classification head of an HF ``*ForImageClassification`` module.

    Parameters
    ----------
    model : nn.Module
        E.g. ``ViTForImageClassification`` / ``BeitForImageClassification`` / ``Data2VecVisionForImageClassification``
        / ``Dinov2ForImageClassification``, with a linear ``classifier``.
    classes : sequence of length K, optional
        The label of each output unit; default ``config.id2label`` in unit order. Pass ``range(K)`` to use unit
        indices as labels (the reference code compares predicted indices with ImageNet class ids).

    Returns
    -------
    LinearClassifier with ``readout="auto"`` (what that head sees) and ``info={"kind": "head", ...}``.
    """
    net = _resolve(model)
    if net.head_module is None:
        raise ValueError(f"{net.name} has no linear classification head (expected an HF *ForImageClassification "
                         "module); train a probe with convexlib.euclidean.linear_probe")
    lin = net.head_module.classifier
    k = int(lin.out_features)
    if classes is None:
        id2label = getattr(net.head_module.config, "id2label", None) or {}
        classes = [id2label.get(i, id2label.get(str(i), i)) for i in range(k)]
    classes = list(classes)
    if len(classes) != k:
        raise ValueError(f"the head has {k} output units but {len(classes)} classes were given")
    bias = lin.bias.detach().cpu().numpy() if lin.bias is not None else np.zeros(k, np.float32)
    return LinearClassifier(lin.weight.detach().cpu().numpy(), bias, tuple(classes), "auto",
                            {"kind": "head", "module": type(net.head_module).__name__, "n_units": k})


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    C: float = 1.0,
    max_iter: int = 500,
    tol: float = 1e-6,
    standardize: bool = True,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Multinomial logistic regression with an L2 penalty, by full-batch L-BFGS in float64.

    Minimises ``C · Σ_i CE(W x_i + b, y_i) + ½‖W‖²`` (scikit-learn's objective; the bias is not penalised), on
    standardised features when ``standardize`` (the scaling is folded back into ``W`` and ``b``). Starts from
    zero, so the fit is deterministic.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    y : ndarray of shape (n,), int codes in 0..n_classes-1
    n_classes : int
    C : float
        Inverse penalty strength (> 0).
    max_iter : int
        L-BFGS iterations.
    tol : float
        Stop when the largest gradient entry falls below ``tol``.
    standardize : bool

    Returns
    -------
    weight : ndarray (n_classes, d), float64, acting on raw features
    bias : ndarray (n_classes,), float64
    info : dict
        ``{"n_iter", "loss", "grad_max", "converged"}``; converged means the gradient fell below ``tol`` or the
        loss stopped changing before ``max_iter``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X must be (n, d) and y (n,), got {X.shape} and {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X holds NaN or inf")
    if len(y) == 0 or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y must hold codes in 0..{n_classes - 1}")
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C!r}")
    mu = X.mean(axis=0) if standardize else np.zeros(X.shape[1])
    sd = X.std(axis=0) if standardize else np.ones(X.shape[1])
    sd = np.where(sd > 0, sd, 1.0)
    Z = torch.from_numpy((X - mu) / sd)
    Y = torch.from_numpy(y)
    n, d = Z.shape
    W = torch.zeros(n_classes, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")
    scale = 1.0 / (C * n)  # objective divided by C·n: same minimiser, better conditioned numbers

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(Z @ W.T + b, Y, reduction="mean") + 0.5 * scale * (W * W).sum()
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny ops: thread synchronisation costs more than it gains (10-40x on 2 cores)
    try:
        with torch.enable_grad():
            opt.step(closure)
            loss = closure()
    finally:
        torch.set_num_threads(threads)
    grad_max = float(max(W.grad.abs().max(), b.grad.abs().max()))
    n_iter = int(opt.state[W].get("n_iter", 0))
    Wr = W.detach().numpy() / sd[None, :]
    br = b.detach().numpy() - Wr @ mu
    converged = grad_max <= tol or n_iter < max_iter
    return Wr, br, {"n_iter": n_iter, "loss": float(loss.detach()), "grad_max": grad_max, "converged": converged}


def _labels_digest(labels: np.ndarray) -> str:
    items = [f"{type(v).__name__}:{v!r}" for v in np.asarray(labels, dtype=object).tolist()]
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def train_linear_probe(
    features: np.ndarray,
    labels: Sequence[Hashable] | np.ndarray,
    *,
    readout: str = "auto",
    C: float = 1.0,
    max_iter: int = 500,
    tol: float = 1e-6,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> LinearClassifier:
    """Fit a logistic-regression probe (:func:`fit_logistic`) on head inputs; cached on the data's checksum.

    Parameters
    ----------
    features : ndarray of shape (n, d)
        Head inputs (:func:`head_features`) of the training items.
    labels : sequence of length n
        Any hashable labels; the probe's classes are :func:`convexlib.convexity.encode_labels` order.
    readout : str
        Recorded in the classifier; must be the readout ``features`` were made with.
    C, max_iter, tol : see :func:`fit_logistic`
    cache : bool
        Read/write ``<cache_dir>/euclidean/probes`` (key: features checksum, labels, hyper-parameters, version).

    Returns
    -------
    LinearClassifier with ``info`` holding ``kind="probe"``, the training accuracy and the fit diagnostics.
    """
    X = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    lab = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if X.ndim != 2 or lab.ndim != 1 or len(lab) != len(X):
        raise ValueError(f"features must be (n, d) and labels (n,), got {X.shape} and {np.shape(lab)}")
    codes, classes = encode_labels(lab)
    if len(classes) < 2:
        raise ValueError(f"a probe needs at least 2 classes, got {len(classes)}")

    def compute():
        W, b, info = fit_logistic(X, codes, len(classes), C=C, max_iter=max_iter, tol=tol)
        return {"weight": W.astype(np.float32), "bias": b.astype(np.float32)}, {"fit": info}

    if cache:
        key = {"kind": "linear_probe", "schema": 1, "features_sha256": array_checksum(X),
               "labels_sha256": _labels_digest(lab), "C": float(C), "max_iter": int(max_iter), "tol": float(tol),
               "standardize": True, "convexlib": __version__}
        arrays = cached_arrays(key, "euclidean/probes", compute, cache_dir=cache_dir)
    else:
        arrays, _ = compute()
    probe = LinearClassifier(arrays["weight"], arrays["bias"], tuple(classes), readout, {})
    train_acc = float((probe.predict_units(X) == codes).mean())
    info = {"kind": "probe", "method": "logistic regression (L2, L-BFGS, standardised)", "C": float(C),
            "max_iter": int(max_iter), "n_train": int(len(X)), "train_accuracy": train_acc}
    return LinearClassifier(probe.weight, probe.bias, probe.classes, readout, info)


def linear_probe(
    model: ModelLike,
    train: ImageSet,
    *,
    test: ImageSet | None = None,
    readout: str = "auto",
    C: float = 1.0,
    max_iter: int = 500,
    batch_size: int = 32,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> LinearClassifier:
    """Train a probe on the last layer's head inputs of ``train`` (labels from the set); report ``test`` accuracy.

    Head inputs and the probe are cached (:func:`head_features`, :func:`train_linear_probe`). ``info`` gains
    ``test_accuracy`` and ``n_test`` when ``test`` is given.
    """
    if train.labels is None:
        raise ValueError("the training set has no labels")
    net = _resolve(model)
    r = _auto_readout(net) if readout == "auto" else readout
    feats = head_features(_model_of(net), train, readout=r, batch_size=batch_size,
                          cache=cache, cache_dir=cache_dir, progress=progress)
    probe = train_linear_probe(feats, train.labels, readout=r, C=C, max_iter=max_iter, cache=cache,
                               cache_dir=cache_dir)
    info = dict(probe.info, model=net.name, train_set=train.name)
    if test is not None:
        if test.labels is None:
            raise ValueError("the test set has no labels")
        tf = head_features(_model_of(net), test, readout=r, batch_size=batch_size,
                           cache=cache, cache_dir=cache_dir, progress=progress)
        pred = probe.predict(tf)
        info.update(test_accuracy=float(np.mean([p == t for p, t in zip(pred, test.labels.tolist())])),
                    n_test=len(test), test_set=test.name)
    return LinearClassifier(probe.weight, probe.bias, probe.classes, r, info)


def stratified_split(labels: Sequence[Hashable] | np.ndarray, n_train: int, n_test: int, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint per-class train/test indices: a seeded permutation of each class, first ``n_train`` then ``n_test``.

    Returns
    -------
    train_index, test_index : ndarray of int64, each sorted
    """
    codes, classes = encode_labels(np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels)
    tr, te = [], []
    for c in range(len(classes)):
        idx = np.nonzero(codes == c)[0]
        if len(idx) < n_train + n_test:
            raise ValueError(f"class {classes[c]!r} has {len(idx)} items, fewer than {n_train} + {n_test}")
        perm = np.random.default_rng([seed, c]).permutation(idx)
        tr.append(perm[:n_train])
        te.append(perm[n_train:n_train + n_test])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(te))


# ------------------------------------------------------------------------------------------------------------------
# Result and main entry
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EuclideanConvexityResult:
    """Euclidean convexity of one layer.

    Attributes
    ----------
    score : float
        Mean of the class scores, in percent (SPEC §4.2's layer score).
    pooled_score : float
        Mean over all sampled pairs of all classes, in percent (``nnconvexity``'s number).
    class_scores : dict
        label -> class score in percent.
    pair_scores : dict
        label -> ndarray (m_c,): share in [0, 1] of each pair's interior points predicted as the class.
    point_correct : dict
        label -> bool ndarray (m_c, n_sampled): whether the point at λ_i of each pair kept the class.
    pairs : dict
        label -> ndarray (m_c, 2) of item indices (i, j), the segment being λ·x_i + (1 − λ)·x_j.
    n_pairs : dict
        label -> number of sampled pairs.
    n_points : dict
        label -> number of items in the class.
    sem_points : dict
        label -> std of pair scores (ddof=1) / sqrt(items in class), percent (the reference's ``sem_adjusted``).
    sem_pairs : dict
        label -> std of pair scores (ddof=1) / sqrt(sampled pairs), percent.
    sem : float
        sqrt(sum_c sem_pairs_c²) / C, percent.
    lambda_profile : ndarray (n_sampled,)
        Share of points kept in class at each λ_i, over all pairs, percent.
    skipped_classes : list
        Labels with fewer than 2 items, not scored.
    settings : dict
        layer, n_sampled, lambdas, max pairs, seed, sampling, readout, batch size, classifier info, model name.
    """

    score: float
    pooled_score: float
    class_scores: dict
    pair_scores: dict
    point_correct: dict
    pairs: dict
    n_pairs: dict
    n_points: dict
    sem_points: dict
    sem_pairs: dict
    sem: float
    lambda_profile: np.ndarray
    skipped_classes: list
    settings: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line: score, SEM, pooled score, classes and pairs."""
        return (f"Euclidean convexity {self.score:.2f}% (SEM {self.sem:.2f}, pooled {self.pooled_score:.2f}%) at "
                f"layer {self.settings.get('layer')} over {len(self.class_scores)} classes, "
                f"{sum(self.n_pairs.values())} pairs x {self.settings.get('n_sampled')} points")


def _sample_all_pairs(codes: np.ndarray, lab: np.ndarray, valid: list[int], n_pairs: int, seed: int,
                      sampling: str) -> dict[int, np.ndarray]:
    members = {c: np.nonzero(codes == c)[0] for c in valid}
    pairs: dict[int, np.ndarray] = {}
    if sampling == "generator":
        for c in valid:
            local = sample_unordered_pairs(len(members[c]), n_pairs, np.random.default_rng([seed, int(c)]))
            pairs[c] = members[c][local]
        return pairs
    if sampling == "reference":
        # nnconvexity: np.random.seed(seed); for label in set(labels): np.random.choice over combinations
        rs = np.random.RandomState(seed)
        code_of: dict = {}
        for v, c in zip(lab.tolist(), codes.tolist()):
            code_of.setdefault(v, c)
        for v in set(lab.tolist()):
            c = code_of[v]
            if c not in members:
                continue  # a 1-item class has no pair; the reference draws nothing for it either
            local = sample_unordered_pairs(len(members[c]), n_pairs, rs)
            pairs[c] = members[c][local]
        return {c: pairs[c] for c in valid}
    raise ValueError(f"sampling must be 'generator' or 'reference', got {sampling!r}")


def euclidean_convexity(
    model: ModelLike,
    layer: int,
    token_states: np.ndarray | torch.Tensor,
    labels: Sequence[Hashable] | np.ndarray,
    *,
    classifier: LinearClassifier | None = None,
    n_pairs: int = 5000,
    n_sampled: int = 10,
    seed: int = 42,
    sampling: str = "generator",
    pairs: Mapping[Hashable, np.ndarray] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> EuclideanConvexityResult:
    """Euclidean convexity of the classes of ``labels`` at ``layer`` (SPEC §4.2), batched across pairs.

    Parameters
    ----------
    model : LoadedModel, registry name, ModelSpec or HF module
        An HF ViT / DINOv2 / BEiT / data2vec-vision encoder, or a ``*ForImageClassification`` wrapper (whose own
        head is used when ``classifier`` is None).
    layer : int
        Block 1..L whose outputs ``token_states`` are.
    token_states : array of shape (N, T, D)
        Full token matrices at ``layer`` (:func:`token_states`), float16 or float32.
    labels : sequence of length N
        Any hashable values. Classes with fewer than 2 items are skipped and listed.
    classifier : LinearClassifier, optional
        Probe (:func:`linear_probe`) or head (:func:`head_classifier`). Every scored label must be among its
        classes.
    n_pairs : int
        Unordered pairs drawn per class without replacement (the reference: 5000).
    n_sampled : int
        Interior points per segment (the reference: 10).
    seed : int
        Pair sampling seed; same inputs and seed give the same pairs for any model and layer (paired designs).
    sampling : {"generator", "reference"}
        ``"generator"``: per class ``numpy.random.default_rng([seed, class code])``, positions sorted.
        ``"reference"``: one legacy ``RandomState(seed)`` drawn class after class in ``set(labels)`` order, as
        ``nnconvexity.euclidean.compute_euclidean_convexity`` after ``np.random.seed(seed)`` -- the same pairs.
    pairs : mapping label -> array (m, 2), optional
        Explicit item-index pairs (same class) to score instead of sampling; labels not in it are not scored.
    batch_size : int
        Interpolated points per forward pass (pairs are cut across batches).
    progress : bool

    Returns
    -------
    EuclideanConvexityResult
    """
    net = _resolve(model)
    layer = _check_layer(net, layer)
    S = token_states if isinstance(token_states, np.ndarray) else token_states.detach().cpu().numpy()
    if S.ndim != 3:
        raise ValueError(f"token_states must have shape (N, T, D), got {S.shape}")
    if S.dtype not in (np.float16, np.float32, np.float64):
        raise ValueError(f"token_states must be a float array, got {S.dtype}")
    n = S.shape[0]
    lab = np.asarray(labels, dtype=object) if not isinstance(labels, np.ndarray) else labels
    if lab.ndim != 1 or len(lab) != n:
        raise ValueError(f"labels must be 1-d with one label per item ({n}), got shape {np.shape(lab)}")
    n_pairs = check_count(n_pairs, "n_pairs", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    lambdas = segment_lambdas(n_sampled)
    if classifier is None:
        if net.head_module is None:
            raise ValueError(f"{net.name} has no classification head for these labels: pass classifier= (train one "
                             "with convexlib.euclidean.linear_probe, or take a checkpoint head with head_classifier)")
        classifier = head_classifier(net.head_module)
    if not isinstance(classifier, LinearClassifier):
        raise TypeError(f"classifier must be a LinearClassifier, got {type(classifier).__name__}")
    readout = _auto_readout(net) if classifier.readout == "auto" else classifier.readout
    d_head = head_dim(net.base, readout)
    if classifier.in_features != d_head:
        raise ValueError(f"the classifier takes {classifier.in_features}-d inputs but readout {readout!r} of "
                         f"{net.name} gives {d_head}-d")

    codes, classes = encode_labels(lab)
    counts = np.bincount(codes, minlength=len(classes))
    skipped = [classes[c] for c in range(len(classes)) if counts[c] < 2]
    valid = [c for c in range(len(classes)) if counts[c] >= 2]
    if pairs is not None:
        code_of_label = {v: c for c, v in enumerate(classes)}
        chosen: dict[int, np.ndarray] = {}
        for key, pr in pairs.items():
            if key not in code_of_label:
                raise ValueError(f"pairs given for label {key!r}, which is not among the labels")
            c = code_of_label[key]
            arr = np.asarray(pr, dtype=np.int64).reshape(-1, 2)
            if arr.size == 0 or arr.min() < 0 or arr.max() >= n:
                raise ValueError(f"pairs of {key!r} must be item indices in 0..{n - 1}")
            if not (codes[arr] == c).all():
                raise ValueError(f"pairs of {key!r} contain items of another class")
            chosen[c] = arr
        sampled = {c: chosen[c] for c in sorted(chosen)}
    else:
        if not valid:
            raise ValueError(f"Euclidean convexity needs a class with 2 or more items; class sizes: "
                             f"{dict(zip(map(str, classes), counts.tolist()))}")
        sampled = _sample_all_pairs(codes, lab, valid, int(n_pairs), int(seed), sampling)
    # map the classifier's units to label codes (-1: a unit for a label not scored here)
    code_of = {v: c for c, v in enumerate(classes)}
    unit_code = np.array([code_of.get(v, -1) if _hashable(v) else -1 for v in classifier.classes], dtype=np.int64)
    known = set(unit_code.tolist())
    missing = [classes[c] for c in sampled if c not in known]
    if missing:
        raise ValueError(f"labels {missing[:10]} are not among the classifier's classes "
                         f"(e.g. {list(classifier.classes)[:5]}); their points could never be classified correctly")

    order = list(sampled)
    all_pairs = np.concatenate([sampled[c] for c in order]) if order else np.zeros((0, 2), np.int64)
    pair_code = np.concatenate([np.full(len(sampled[c]), c) for c in order]) if order else np.zeros(0, np.int64)
    m = len(all_pairs)
    k = len(lambdas)
    lam32 = torch.from_numpy(lambdas.astype(np.float32))
    oml32 = torch.from_numpy((1.0 - lambdas).astype(np.float32))
    correct = np.zeros(m * k, dtype=bool)
    w = torch.from_numpy(classifier.weight).to(net.device)
    b = torch.from_numpy(classifier.bias).to(net.device)
    total = m * k
    bar = tqdm(total=total, desc=f"Euclidean convexity [{net.name} layer {layer}]", unit="pt", disable=not progress,
               leave=False)
    try:
        with torch.inference_mode():
            for start in range(0, total, batch_size):
                idx = np.arange(start, min(start + batch_size, total))
                p, li = idx // k, idx % k
                x1 = torch.from_numpy(np.asarray(S[all_pairs[p, 0]], dtype=np.float32))
                x2 = torch.from_numpy(np.asarray(S[all_pairs[p, 1]], dtype=np.float32))
                pts = lam32[li].view(-1, 1, 1) * x1 + oml32[li].view(-1, 1, 1) * x2
                h = _forward_net(net, pts, layer, readout)
                units = (h @ w.T + b).argmax(dim=1).cpu().numpy()
                correct[start:start + len(idx)] = unit_code[units] == pair_code[p]
                bar.update(len(idx))
    finally:
        bar.close()
    correct = correct.reshape(m, k)

    label_of = {c: classes[c] for c in order}
    point_correct: dict = {}
    pair_scores: dict = {}
    a = 0
    for c in order:
        mc = len(sampled[c])
        point_correct[label_of[c]] = correct[a:a + mc]
        pair_scores[label_of[c]] = correct[a:a + mc].mean(axis=1)
        a += mc

    def _sd(s: np.ndarray) -> float:
        return float(s.std(ddof=1)) if len(s) > 1 else 0.0

    class_scores = {lbl: 100.0 * float(s.mean()) for lbl, s in pair_scores.items()}
    sem_pairs = {lbl: 100.0 * _sd(s) / np.sqrt(len(s)) for lbl, s in pair_scores.items()}
    sem_points = {label_of[c]: 100.0 * _sd(pair_scores[label_of[c]]) / np.sqrt(counts[c]) for c in order}
    pooled = np.concatenate(list(pair_scores.values())) if pair_scores else np.zeros(0)
    if len(pooled) == 0:
        raise ValueError("no pairs to score")
    return EuclideanConvexityResult(
        score=float(np.mean(list(class_scores.values()))),
        pooled_score=100.0 * float(pooled.mean()),
        class_scores=class_scores,
        pair_scores=pair_scores,
        point_correct=point_correct,
        pairs={label_of[c]: sampled[c] for c in order},
        n_pairs={label_of[c]: int(len(sampled[c])) for c in order},
        n_points={label_of[c]: int(counts[c]) for c in order},
        sem_points=sem_points,
        sem_pairs=sem_pairs,
        sem=float(np.sqrt(sum(v * v for v in sem_pairs.values())) / len(sem_pairs)),
        lambda_profile=100.0 * correct.mean(axis=0),
        skipped_classes=skipped,
        settings={
            "layer": int(layer), "n_sampled": int(k), "lambdas": lambdas.tolist(), "max_pairs": int(n_pairs),
            "seed": int(seed), "sampling": "explicit" if pairs is not None else sampling, "readout": readout,
            "batch_size": int(batch_size), "model": net.name, "classifier": dict(classifier.info),
            "n_points": int(n), "n_classes": len(class_scores), "token_dtype": str(S.dtype),
        },
    )


def _hashable(v: Any) -> bool:
    try:
        hash(v)
        return True
    except TypeError:
        return False
