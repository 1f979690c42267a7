"""Layer-wise features of an item set, in one call, with a disk cache.

``extract(model, data)`` returns ``{layer: ndarray (n, d)}`` (float32, rows in item order) for a registered
model name, a :class:`~convexlib.models.ModelSpec` or an already loaded :class:`~convexlib.models.LoadedModel`,
and an :class:`~convexlib.data.sets.ImageSet` or :class:`~convexlib.data.sets.TextSet`.

Result shape (one design, two cases)
------------------------------------
* ``pooling`` a string or ``None`` (the model's default):  ``{layer: ndarray (n, d)}``.
* ``pooling`` a list/tuple of rules: ``{pooling: {layer: ndarray (n, d)}}``, all from one forward pass.

Extraction
----------
Runs under :func:`torch.inference_mode` in batches of ``batch_size`` items, in item order, with a tqdm bar.
Items are loaded and preprocessed by a small thread pool one batch ahead of the model (images through
:class:`convexlib.data.sets.ImageDataset`, texts through the tokenizer), so decoding overlaps the forward pass.
Only pooled vectors are kept: memory is O(n * L * d) plus one batch of token states.

Cache
-----
One file per (model, data, pooling) under ``<cache_dir>/features/<model name>/<key digest>.npz`` written with
:mod:`convexlib.cache` (atomic, checksummed). The key (:func:`feature_key`) holds everything that determines the
numbers: backend, model id and revision (or the offline wheel's version), preprocessing, norm choice, pooling,
the stored layers, the data's content fingerprint and item count, and the convexlib version (plus a weights hash
for wrapped modules). A cache entry always stores *all* layers 1..L, since one forward pass yields them all for
the cost of the deepest one; a later request for any subset of layers is a hit. A warm cache loads nothing but
the file: no model load, no forward pass. An entry that fails to load (truncated, checksum mismatch, wrong key)
is logged and recomputed. Device and library versions are recorded in the entry's meta but are not part of
the key (CPU and GPU results agree to float32 rounding, not bit for bit).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from . import models as _models
from .cache import entry_path, load_arrays, save_arrays
from .data.sets import ImageSet, TextSet
from .errors import CacheError
from .models import LoadedModel, ModelSpec

__all__ = ["extract", "feature_key", "feature_cache_path", "things_texts", "TEXT_MODES"]

log = logging.getLogger(__name__)

ModelLike = str | ModelSpec | LoadedModel
ItemSet = ImageSet | TextSet

#: How THINGS concepts are rendered as text (``things_texts``).
TEXT_MODES = {
    "word_definition": "{Word}: {definition}",
    "word": "{Word}",
    "definition": "{definition}",
}
_DEFINITION_COLUMNS = ("definition", "Definition (from WordNet, Google, or Wikipedia)")


# ------------------------------------------------------------------------------------------------------------------
# Text sets
# ------------------------------------------------------------------------------------------------------------------


def things_texts(concepts_df: Any, mode: str = "word_definition", *, name: str | None = None) -> TextSet:
    """THINGS concepts as texts for a text model.

    Parameters
    ----------
    concepts_df : DataFrame
        One row per concept, in THINGS order, with columns ``Word`` and ``definition`` (as returned by
        :func:`convexlib.data.things.load_concepts`; the raw TSV column
        ``"Definition (from WordNet, Google, or Wikipedia)"`` is accepted too).
    mode : {"word_definition", "word", "definition"}
        ``"word_definition"`` (default) renders ``"{Word}: {definition}"``, which is unique for all 1,854
        concepts; ``"word"`` gives names only (58 concepts share a name with another, e.g. the two "bat"s, so
        their texts and features coincide); ``"definition"`` gives the definitions only.

    Returns
    -------
    TextSet of length ``len(concepts_df)``, ``meta={"source": "THINGS concepts", "mode": mode}``.
    """
    if mode not in TEXT_MODES:
        raise ValueError(f"mode must be one of {sorted(TEXT_MODES)}, got {mode!r}")
    if "Word" not in concepts_df.columns:
        raise ValueError(f"concepts_df needs a 'Word' column; it has {list(concepts_df.columns)}")
    words = [str(w) for w in concepts_df["Word"]]
    definitions: list[str] = []
    if mode != "word":
        col = next((c for c in _DEFINITION_COLUMNS if c in concepts_df.columns), None)
        if col is None:
            raise ValueError(f"mode {mode!r} needs a 'definition' column; concepts_df has {list(concepts_df.columns)}")
        raw = list(concepts_df[col])
        bad = [i for i, d in enumerate(raw) if d is None or (isinstance(d, float) and np.isnan(d)) or not str(d).strip()]
        if bad:
            raise ValueError(f"{len(bad)} concept(s) have no definition, first at row {bad[0]} ({words[bad[0]]!r})")
        definitions = [str(d).strip() for d in raw]
    template = TEXT_MODES[mode]
    texts = [template.format(Word=w, definition=definitions[i] if definitions else "") for i, w in enumerate(words)]
    return TextSet(tuple(texts), None, name or f"things-concepts-{mode}", {"source": "THINGS concepts", "mode": mode})


# ------------------------------------------------------------------------------------------------------------------
# Keys
# ------------------------------------------------------------------------------------------------------------------


def _as_item_set(data: Any) -> ItemSet:
    if isinstance(data, (ImageSet, TextSet)):
        return data
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and all(isinstance(t, str) for t in data):
        return TextSet(tuple(data))
    raise TypeError(f"data must be an ImageSet, a TextSet or a list of strings, got {type(data).__name__}")


def _spec_of(model: ModelLike) -> ModelSpec:
    if isinstance(model, LoadedModel):
        return model.spec
    return _models.get_spec(model)


def feature_key(model: ModelLike, data: ItemSet, pooling: str, *, fingerprint: str | None = None) -> dict[str, Any]:
    """The cache key of one (model, data, pooling) entry; see the module docstring for what it holds."""
    spec = _spec_of(model)
    data = _as_item_set(data)
    return {
        "kind": "layer_features",
        "schema": 1,
        "model": _models.model_identity(model),
        "pooling": pooling,
        "layers": list(range(1, spec.n_layers + 1)),
        "data": {
            "fingerprint": fingerprint or data.fingerprint(),
            "n": len(data),
            "kind": "images" if isinstance(data, ImageSet) else "texts",
            "image_mode": "RGB" if isinstance(data, ImageSet) else None,
        },
        "dtype": "float32",
        "convexlib": __version__,
    }


def feature_cache_path(model: ModelLike, key: Mapping[str, Any], cache_dir: str | os.PathLike | None = None):
    """Where the entry for ``key`` lives: ``<cache_dir>/features/<model name>/<digest>.npz``."""
    return entry_path(key, f"features/{_spec_of(model).name}", cache_dir)


def _layer_name(layer: int) -> str:
    return f"layer_{layer:02d}"


# ------------------------------------------------------------------------------------------------------------------
# Batching
# ------------------------------------------------------------------------------------------------------------------


def _image_item_loader(data: ImageSet, preprocess):
    from .data import sets

    dataset_cls = getattr(sets, "ImageDataset", None)
    if dataset_cls is not None:
        ds = dataset_cls(data, preprocess, on_error="raise")

        def load(i: int) -> torch.Tensor:
            item = ds[i]
            return item[0] if isinstance(item, tuple) else item

        return load

    from PIL import Image  # fallback when convexlib.data.sets has no ImageDataset

    def load_plain(i: int) -> torch.Tensor:
        with Image.open(data.paths[i]) as img:
            return preprocess(img.convert("RGB"))

    return load_plain


def _batches(loaded: LoadedModel, data: ItemSet, batch_size: int, num_workers: int) -> Iterator[tuple[int, Any]]:
    """Yield ``(start, batch)`` in item order; a thread pool prepares the next batch while one is consumed."""
    n = len(data)
    starts = list(range(0, n, batch_size))
    if isinstance(data, TextSet):
        def make(s: int) -> Any:
            return loaded.make_batch(data.texts[s:s + batch_size])
        per_item = None
    else:
        per_item = _image_item_loader(data, loaded.preprocess)

        def make(s: int) -> Any:
            return torch.stack([per_item(i) for i in range(s, min(s + batch_size, n))])

    if num_workers <= 0:
        for s in starts:
            yield s, make(s)
        return

    ex = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="convexlib-load")
    pending: deque[tuple[int, Any]] = deque()

    def submit(s: int) -> None:
        if per_item is None:
            pending.append((s, ex.submit(make, s)))
        else:  # one task per image, so a batch is decoded by all workers at once
            pending.append((s, [ex.submit(per_item, i) for i in range(s, min(s + batch_size, n))]))

    try:
        todo = iter(starts)
        for s in todo:
            submit(s)
            if len(pending) >= 2:
                break
        while pending:
            s, fut = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                submit(nxt)
            if isinstance(fut, Future):
                yield s, fut.result()
            else:
                yield s, torch.stack([f.result() for f in fut])
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _run(
    loaded: LoadedModel,
    data: ItemSet,
    layers: tuple[int, ...],
    poolings: tuple[str, ...],
    batch_size: int,
    progress: bool,
    num_workers: int,
) -> dict[str, dict[int, np.ndarray]]:
    n = len(data)
    d = loaded.spec.dim
    out = {p: {layer: np.empty((n, d), dtype=np.float32) for layer in layers} for p in poolings}
    order = [(layer, p) for layer in layers for p in poolings]
    bar = tqdm(total=n, desc=f"{loaded.spec.name} [{getattr(data, 'name', 'data')}]", unit="item",
               disable=not progress, leave=False)
    try:
        with torch.inference_mode():
            for start, batch in _batches(loaded, data, batch_size, num_workers):
                res = loaded.forward_layers(batch, layers, poolings)
                stacked = torch.stack([res[k] for k in order])  # (K, B, d): one device->host copy per batch
                if stacked.shape[-1] != d:
                    raise ValueError(f"{loaded.spec.name}: pooled vectors are {stacked.shape[-1]}-d, spec says {d}")
                host = stacked.to("cpu", torch.float32).numpy()
                b = host.shape[1]
                for j, (layer, p) in enumerate(order):
                    out[p][layer][start:start + b] = host[j]
                bar.update(b)
    finally:
        bar.close()
    for p in poolings:
        for layer in layers:
            if not np.isfinite(out[p][layer]).all():
                raise ValueError(f"{loaded.spec.name}: non-finite values in layer {layer} ({p}); "
                                 "check the inputs and the model weights")
    return out


# ------------------------------------------------------------------------------------------------------------------
# extract
# ------------------------------------------------------------------------------------------------------------------


def extract(
    model: ModelLike,
    data: ItemSet | Sequence[str],
    layers: int | Iterable[int] | None = None,
    *,
    pooling: str | Sequence[str] | None = None,
    batch_size: int = 32,
    device: str = "auto",
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    num_workers: int | None = None,
) -> dict[int, np.ndarray] | dict[str, dict[int, np.ndarray]]:
    """Pooled representations after transformer blocks, one array per layer.

    Parameters
    ----------
    model : str, ModelSpec or LoadedModel
        Registry name (``"vit"``, ``"minilm"``, ``"timm:<name>"``, ...), a spec, or a loaded/wrapped model.
    data : ImageSet, TextSet or list of str
        Items in order; images must match an image model, texts a text model.
    layers : int or iterable of int, optional
        Blocks 1..L (default all). Out-of-range layers raise ``ValueError``.
    pooling : str or sequence of str, optional
        A rule (``"cls"``, ``"mean_patch"``, ``"mean_mask"``) or several; default the model's own.
    batch_size : int
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``... For a LoadedModel, ``"auto"``
        keeps its current device.
    cache : bool
        Read and write the disk cache (see module docstring). ``False`` computes only the requested layers.
    cache_dir : path, optional
        Default :func:`convexlib.paths.cache_dir` (``$CONVEXLIB_CACHE`` or ``<repo>/.cache``).
    progress : bool
        Show a tqdm bar.
    num_workers : int, optional
        Loader threads (0: load in the main thread). Default 1 (texts, and images on CPU, where the forward
        already uses every core); for images on CUDA, up to 8.

    Returns
    -------
    dict layer -> ndarray of shape (n, d), float32
        When ``pooling`` is a string or None.
    dict pooling -> (dict layer -> ndarray of shape (n, d))
        When ``pooling`` is a list or tuple.
    """
    spec = _spec_of(model)
    items = _as_item_set(data)
    if len(items) == 0:
        raise ValueError("data is empty: nothing to extract")
    want_modality = "image" if isinstance(items, ImageSet) else "text"
    if want_modality != spec.modality:
        raise ValueError(f"{spec.name} is a {spec.modality} model but data is a set of {want_modality}s")
    layers_t = _models.validate_layers(layers, spec.n_layers, spec.name)
    multi = pooling is not None and not isinstance(pooling, str)
    poolings = _models._as_poolings(pooling, spec)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if num_workers is None:
        num_workers = _default_workers(items, model, device)

    results: dict[str, dict[int, np.ndarray]] = {}
    keys: dict[str, dict[str, Any]] = {}
    paths: dict[str, Any] = {}
    names = [_layer_name(layer) for layer in layers_t]
    if cache:
        fingerprint = items.fingerprint()
        for p in poolings:
            keys[p] = feature_key(model, items, p, fingerprint=fingerprint)
            paths[p] = feature_cache_path(model, keys[p], cache_dir)
            try:
                arrays, _ = load_arrays(paths[p], names, expect_key=keys[p])
            except FileNotFoundError:
                continue
            except CacheError as exc:
                log.warning("%s; recomputing", exc)
                continue
            results[p] = {layer: arrays[_layer_name(layer)] for layer in layers_t}
    missing = tuple(p for p in poolings if p not in results)

    if missing:
        if isinstance(model, LoadedModel):
            loaded = model if device == "auto" else model.to(device)
        else:
            loaded = _models.load_model(spec, device=device)
        compute_layers = tuple(range(1, spec.n_layers + 1)) if cache else layers_t
        t0 = time.perf_counter()
        computed = _run(loaded, items, compute_layers, missing, batch_size, progress, num_workers)
        seconds = time.perf_counter() - t0
        for p in missing:
            if cache:
                meta = {
                    "key": keys[p], "model_name": spec.name, "data_name": getattr(items, "name", ""),
                    "device": str(loaded.device), "seconds": round(seconds, 3), "batch_size": batch_size,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loaded_info": _jsonable_info(loaded.info),
                    "versions": {"torch": torch.__version__, **_lib_versions()},
                }
                save_arrays(paths[p], {_layer_name(layer): a for layer, a in computed[p].items()}, meta)
            results[p] = {layer: computed[p][layer] for layer in layers_t}

    ordered = {p: results[p] for p in poolings}
    return ordered if multi else ordered[poolings[0]]


def _default_workers(items: ItemSet, model: ModelLike, device: str) -> int:
    """One loader thread on CPU (the forward already uses every core); up to 8 when a GPU does the forward."""
    if isinstance(items, TextSet):
        return 1
    dev = model.device.type if isinstance(model, LoadedModel) and device == "auto" else \
        torch.device(_models.resolve_device(device)).type
    return min(8, os.cpu_count() or 1) if dev == "cuda" else 1


def _lib_versions() -> dict[str, str | None]:
    return {d: _models._dist_version(d) for d in ("transformers", "timm", "numpy")}


def _jsonable_info(info: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in info.items()}
