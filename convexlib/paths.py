"""One place for every path: repository root, data root and cache directory.

All paths are built from the repository root (the folder holding ``pyproject.toml``), never from the
working directory, so a notebook run from ``notebooks/`` writes to the same place as one run from the root.

Resolution order
----------------
data root   explicit argument > ``$CONVEXLIB_DATA`` > ``<repo>/data``
cache dir   explicit argument > ``$CONVEXLIB_CACHE`` > ``<repo>/.cache``
figures     ``<repo>/figures/<profile>``
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataNotFoundError

DATA_ENV = "CONVEXLIB_DATA"
CACHE_ENV = "CONVEXLIB_CACHE"


def repo_root() -> Path:
    """Return the repository root: the nearest parent of this package holding ``pyproject.toml``.

    Falls back to the current working directory when the package is installed outside a checkout.
    """
    here = Path(__file__).resolve().parent
    for parent in (here, *here.parents):
        if (parent / "pyproject.toml").is_file() and (parent / "convexlib").is_dir():
            return parent
    return Path.cwd()


def data_root(root: str | os.PathLike | None = None, *, must_exist: bool = True) -> Path:
    """Resolve the data root.

    Parameters
    ----------
    root : path, optional
        Explicit data root. Defaults to ``$CONVEXLIB_DATA``, then ``<repo>/data``.
    must_exist : bool
        Raise :class:`DataNotFoundError` when the folder does not exist.
    """
    if root is None:
        root = os.environ.get(DATA_ENV) or (repo_root() / "data")
    path = Path(root).expanduser().resolve()
    if must_exist and not path.is_dir():
        raise DataNotFoundError(
            f"data root {path} does not exist. Set ${DATA_ENV} (e.g. export {DATA_ENV}=../shared/data), "
            f"pass data_root=..., or run `python -m convexlib.data fetch --root {path}`; "
            "see data/README.md for the layout."
        )
    return path


def data_file(relative: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """Path of one file under the data root; raises :class:`DataNotFoundError` naming it if absent."""
    base = data_root(root)
    path = base / relative
    if not path.exists():
        raise DataNotFoundError(
            f"{relative} is missing under the data root {base}. "
            "Run `python -m convexlib.data fetch` or see data/README.md for where it comes from."
        )
    return path


def cache_dir(cache: str | os.PathLike | None = None, *, create: bool = True) -> Path:
    """Resolve the cache directory (argument > ``$CONVEXLIB_CACHE`` > ``<repo>/.cache``)."""
    if cache is None:
        cache = os.environ.get(CACHE_ENV) or (repo_root() / ".cache")
    path = Path(cache).expanduser().resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def figures_dir(profile: str, *, create: bool = True) -> Path:
    """``<repo>/figures/<profile>``, where every figure and table of a profile is written."""
    path = repo_root() / "figures" / profile
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
