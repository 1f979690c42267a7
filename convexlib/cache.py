"""A small, generic, atomic on-disk cache of named NumPy arrays.

Used by feature extraction (:mod:`convexlib.features`) and by any other module that caches arrays (fitted
transforms, convexity results, ...). It knows nothing about models.

File format
-----------
One uncompressed ``.npz`` file per entry. Besides the user's arrays it holds one extra member, ``__meta__``: a
``uint8`` array with UTF-8 JSON ``{"format": 1, "checksums": {name: sha256}, "meta": {...}}``. The checksum of an
array covers its dtype, shape and bytes, so a truncated, partly written or edited file is detected on load.
Nothing is pickled (``allow_pickle=False`` on both sides).

Writes are atomic: the entry is written to a temporary file in the same folder, flushed and ``fsync``-ed, then
renamed over the final name with :func:`os.replace`. A reader therefore sees either the old entry, the new one,
or none, never half a file; two processes writing the same entry race harmlessly (the last rename wins).

Keys
----
A key is a JSON-able mapping holding everything that determines the cached numbers. :func:`key_digest` hashes
its canonical JSON (sorted keys, no whitespace) with sha256; :func:`entry_path` turns it into
``<cache_dir>/<namespace>/<digest>.npz``. Store the key itself in ``meta`` and pass it back as ``expect_key``
to :func:`load_arrays` to guard against a file that was copied or renamed into the wrong place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CacheError
from .paths import cache_dir as _cache_dir

__all__ = [
    "FORMAT_VERSION",
    "array_checksum",
    "canonical_json",
    "key_digest",
    "entry_path",
    "save_arrays",
    "load_arrays",
    "cached_arrays",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_META = "__meta__"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def open_npz(path: str | os.PathLike, what: str = "an .npz archive") -> np.lib.npyio.NpzFile:
    """``np.load`` of an ``.npz`` archive without pickles; a file that is not one raises a ``ValueError`` that
    names it and says what was expected (``what``), instead of numpy's or zipfile's own error."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: cannot be read as {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: is a single .npy array, not {what}")
    return npz


def _jsonable(obj: Any) -> Any:
    """Convert ``obj`` to plain JSON types; raise TypeError for anything without a faithful text form."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if not np.isfinite(value):
            raise TypeError(f"cache keys cannot hold non-finite floats, got {value!r}")
        return value
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"cache key mappings need str keys, got {k!r} ({type(k).__name__})")
            out[k] = _jsonable(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    raise TypeError(
        f"cannot put {type(obj).__name__} into a cache key or meta; convert it to str/int/float/list/dict first"
    )


def canonical_json(obj: Mapping[str, Any]) -> str:
    """Canonical JSON text of a key: sorted keys, no whitespace, tuples as lists, paths as strings."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def key_digest(key: Mapping[str, Any]) -> str:
    """sha256 hex digest (64 characters) of the canonical JSON of ``key``."""
    return hashlib.sha256(canonical_json(key).encode("utf-8")).hexdigest()


def entry_path(
    key: Mapping[str, Any],
    namespace: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    suffix: str = ".npz",
) -> Path:
    """``<cache_dir>/<namespace>/<digest[:40]><suffix>``; the cache dir defaults to :func:`convexlib.paths.cache_dir`.

    ``namespace`` may contain ``/`` to nest folders (e.g. ``"features/vit"``); other unsafe characters are
    replaced by ``_``.
    """
    parts = [(_SAFE.sub("_", p) or "_") for p in str(namespace).split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"namespace must name at least one folder, got {namespace!r}")
    return _cache_dir(cache_dir).joinpath(*parts) / f"{key_digest(key)[:40]}{suffix}"


def array_checksum(arr: np.ndarray) -> str:
    """sha256 over an array's dtype string, shape and C-order bytes."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256()
    h.update(a.dtype.str.encode("ascii"))
    h.update(repr(tuple(a.shape)).encode("ascii"))
    h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


def save_arrays(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write named arrays and JSON meta to ``path`` atomically (temporary file, fsync, rename).

    Parameters
    ----------
    path : path
        Destination file (``.npz``); parent folders are created.
    arrays : mapping str -> ndarray
        Any shapes; numeric, bool or fixed-width string dtypes (object arrays are refused).
    meta : mapping, optional
        JSON-able provenance stored with the arrays (e.g. the cache key, versions, timings).

    Returns
    -------
    Path
        ``path``, now complete on disk.
    """
    path = Path(path)
    if not arrays:
        raise ValueError("save_arrays needs at least one array")
    clean: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        if not isinstance(name, str) or not name or name == _META or "/" in name:
            raise ValueError(f"invalid array name {name!r} (non-empty str without '/', not {_META!r})")
        a = np.asarray(arr)
        if a.dtype.hasobject:
            raise ValueError(f"array {name!r} has dtype {a.dtype}; object arrays cannot be cached safely")
        clean[name] = np.require(a, requirements="C")  # keeps 0-d arrays 0-d (ascontiguousarray does not)
    header = {
        "format": FORMAT_VERSION,
        "checksums": {name: array_checksum(a) for name, a in clean.items()},
        "meta": _jsonable(dict(meta or {})),
    }
    header_arr = np.frombuffer(json.dumps(header, sort_keys=True).encode("utf-8"), dtype=np.uint8)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **{_META: header_arr}, **clean)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_arrays(
    path: str | os.PathLike,
    names: Iterable[str] | None = None,
    *,
    expect_key: Mapping[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an entry written by :func:`save_arrays` and verify it.

    Parameters
    ----------
    path : path
    names : iterable of str, optional
        Load (and verify) only these arrays; default all.
    expect_key : mapping, optional
        When given, ``meta["key"]`` must equal it (compared as canonical JSON).

    Returns
    -------
    arrays : dict str -> ndarray
    meta : dict
        The ``meta`` mapping given to :func:`save_arrays`.

    Raises
    ------
    FileNotFoundError
        No file at ``path`` (a plain cache miss).
    CacheError
        The file exists but is truncated, not an entry of this format, fails a checksum, lacks a requested
        array, or was stored under another key. The caller decides whether to recompute or raise.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no cache entry at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            members = set(npz.files)
            if _META not in members:
                raise CacheError(f"cache entry {path} has no {_META} member; not written by convexlib.cache")
            header = json.loads(bytes(npz[_META]).decode("utf-8"))
            if header.get("format") != FORMAT_VERSION:
                raise CacheError(f"cache entry {path} has format {header.get('format')!r}, expected {FORMAT_VERSION}")
            checksums: dict[str, str] = header["checksums"]
            wanted = list(checksums) if names is None else list(names)
            arrays: dict[str, np.ndarray] = {}
            for name in wanted:
                if name not in checksums or name not in members:
                    raise CacheError(f"cache entry {path} has no array {name!r} (it holds {sorted(checksums)})")
                arr = npz[name]
                if array_checksum(arr) != checksums[name]:
                    raise CacheError(f"cache entry {path}: checksum mismatch for array {name!r} (file corrupt)")
                arrays[name] = arr
    except CacheError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"cache entry {path} cannot be read ({type(exc).__name__}: {exc}); it is corrupt") from exc
    meta = header.get("meta", {})
    if expect_key is not None and canonical_json(meta.get("key", {})) != canonical_json(expect_key):
        raise CacheError(f"cache entry {path} was stored under another key (hash collision or moved file)")
    return arrays, meta


def cached_arrays(
    key: Mapping[str, Any],
    namespace: str,
    compute: Callable[[], Mapping[str, np.ndarray] | tuple[Mapping[str, np.ndarray], Mapping[str, Any]]],
    *,
    cache_dir: str | os.PathLike | None = None,
    on_corrupt: str = "recompute",
) -> dict[str, np.ndarray]:
    """Return the arrays cached under ``key``, computing and saving them on a miss.

    Parameters
    ----------
    key : mapping
        Everything that determines the arrays; stored as ``meta["key"]`` and checked on load.
    namespace : str
        Sub-folder of the cache dir (e.g. ``"transforms"``).
    compute : callable
        ``compute() -> arrays`` or ``compute() -> (arrays, extra_meta)``; called only on a miss.
    cache_dir : path, optional
    on_corrupt : {"recompute", "raise"}
        What to do with an entry that exists but fails to load: log a warning and recompute (overwriting it),
        or raise :class:`CacheError`.
    """
    if on_corrupt not in ("recompute", "raise"):
        raise ValueError(f"on_corrupt must be 'recompute' or 'raise', got {on_corrupt!r}")
    path = entry_path(key, namespace, cache_dir)
    try:
        arrays, _ = load_arrays(path, expect_key=key)
        return arrays
    except FileNotFoundError:
        pass
    except CacheError as exc:
        if on_corrupt == "raise":
            raise
        log.warning("%s; recomputing", exc)
    result = compute()
    if isinstance(result, tuple):
        arrays, extra = result
    else:
        arrays, extra = result, {}
    save_arrays(path, arrays, {**dict(extra), "key": dict(key)})
    return {k: np.asarray(v) for k, v in arrays.items()}
