"""Item sets: the unit that feature extraction consumes.

An item set is an ordered list of items (image files or text strings) with optional labels and a content
fingerprint. The fingerprint is a sha256 over the items' *content* in order (file bytes for images, UTF-8 for
texts), so a cache keyed on it changes whenever an image or the order changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np


def _labels_array(labels: Sequence | np.ndarray | None, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"labels must be a 1-d sequence of length {n} (one per item), got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class ImageSet:
    """An ordered set of image files.

    Attributes
    ----------
    paths : tuple of Path, length n
    labels : ndarray of shape (n,) or None
    name : str
        Short human-readable name, recorded in caches and manifests.
    meta : dict
        Free-form provenance (source, seed, sampling policy, ...).
    """

    paths: tuple[Path, ...]
    labels: np.ndarray | None = None
    name: str = "images"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        object.__setattr__(self, "labels", _labels_array(self.labels, len(self.paths)))

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self) -> str:
        """sha256 over the bytes of every file, in order (file names do not enter)."""
        h = hashlib.sha256()
        for p in self.paths:
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise FileNotFoundError(f"cannot read image {p}: {exc}") from exc
            h.update(hashlib.sha256(data).digest())
        return h.hexdigest()

    def subset(self, index: Sequence[int] | np.ndarray, name: str | None = None) -> "ImageSet":
        """The items at ``index`` (in that order)."""
        idx = np.asarray(index, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        return ImageSet(tuple(self.paths[i] for i in idx), labels, name or self.name, dict(self.meta))


@dataclass(frozen=True)
class TextSet:
    """An ordered set of text strings (e.g. THINGS concepts rendered as ``"{Word}: {definition}"``).

    Attributes
    ----------
    texts : tuple of str, length n
    labels : ndarray of shape (n,) or None
    name : str
    meta : dict
    """

    texts: tuple[str, ...]
    labels: np.ndarray | None = None
    name: str = "texts"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "texts", tuple(str(t) for t in self.texts))
        object.__setattr__(self, "labels", _labels_array(self.labels, len(self.texts)))

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """sha256 over the UTF-8 texts, in order."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(hashlib.sha256(t.encode("utf-8")).digest())
        return h.hexdigest()

    def subset(self, index: Sequence[int] | np.ndarray, name: str | None = None) -> "TextSet":
        """The items at ``index`` (in that order)."""
        idx = np.asarray(index, dtype=np.int64)
        labels = None if self.labels is None else self.labels[idx]
        return TextSet(tuple(self.texts[i] for i in idx), labels, name or self.name, dict(self.meta))


# ----------------------------------------------------------------------------------------------------------------
# torch dataset over an ImageSet
# ----------------------------------------------------------------------------------------------------------------


class UnreadableImageError(OSError):
    """An image file that cannot be opened or decoded; the message names the file."""


def _open_rgb(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise UnreadableImageError(f"cannot read image {path.name} ({path}): {exc}") from exc


def _as_tensor(out):
    import torch

    if isinstance(out, dict) or hasattr(out, "keys"):  # HF image processors return a BatchFeature
        if "pixel_values" not in out:
            raise ValueError(f"preprocess returned a mapping without 'pixel_values': keys {list(out.keys())}")
        out = out["pixel_values"]
        if isinstance(out, (list, tuple)):
            out = out[0]
        out = torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out)
        if out.ndim == 4 and out.shape[0] == 1:
            out = out[0]
        return out
    if isinstance(out, torch.Tensor):
        return out
    return torch.as_tensor(np.asarray(out))


class ImageDataset:
    """A map-style torch dataset over an :class:`ImageSet` that applies a model's preprocessing.

    It implements ``__len__``/``__getitem__`` for ``torch.utils.data.DataLoader`` without subclassing
    ``torch.utils.data.Dataset``, so importing this module does not import torch.

    Items are ``(tensor, index)`` where ``index`` is the position of the image in ``image_set``, so features
    can be put back in set order even when files were skipped.

    Parameters
    ----------
    image_set : ImageSet
    preprocess : callable
        Maps a PIL RGB image to a tensor (a torchvision transform), or to a mapping with ``pixel_values``
        (a HuggingFace image processor called as ``processor(images=img, return_tensors="pt")`` -- wrap it in a
        ``lambda``); a leading batch dimension of 1 is dropped.
    on_error : {"raise", "skip"}
        ``raise`` (default): an unreadable file raises :class:`UnreadableImageError` naming it when it is loaded.
        ``skip``: every file is opened once up front; unreadable ones are left out and listed in ``skipped``
        (``(path, reason)`` pairs, ``n_skipped`` counts them).
    """

    def __init__(self, image_set: ImageSet, preprocess, on_error: str = "raise") -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if not callable(preprocess):
            raise ValueError("preprocess must be callable (PIL image -> tensor)")
        self.image_set = image_set
        self.preprocess = preprocess
        self.on_error = on_error
        skipped: list[tuple[Path, str]] = []
        keep = np.arange(len(image_set), dtype=np.int64)
        if on_error == "skip":
            ok = []
            for i, p in enumerate(image_set.paths):
                try:
                    _open_rgb(p)
                    ok.append(i)
                except UnreadableImageError as exc:
                    skipped.append((p, str(exc.__cause__ or exc)))
            keep = np.asarray(ok, dtype=np.int64)
        self.indices = keep
        self.skipped = tuple(skipped)

    @property
    def n_skipped(self) -> int:
        """Number of files left out as unreadable (always 0 with ``on_error="raise"``)."""
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = int(self.indices[i])
        img = _open_rgb(self.image_set.paths[index])
        return _as_tensor(self.preprocess(img)), index
