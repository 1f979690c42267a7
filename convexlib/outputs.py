"""Writing figures and tables, with a manifest that traces every output file to its origin.

Each notebook opens an :class:`OutputWriter` for its profile. Every file it writes under
``figures/<profile>/`` is recorded in ``figures/<profile>/manifest.json`` with the notebook, its parameters, the
git commit, the library version and the checksums of the data files it read. Two notebooks writing the same
file is an error (the second one is refused).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from . import __version__
from .paths import figures_dir, repo_root

MANIFEST = "manifest.json"


def git_commit() -> str:
    """The current git commit of the repository (with ``+dirty`` when tracked files outside ``figures/`` have
    changes: the outputs themselves, rewritten by the run, do not make the code dirty), or "unknown"."""
    root = repo_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)figures"], cwd=root,
            capture_output=True, text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_sha256(path: str | os.PathLike) -> str:
    """Full sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    try:
        return value.item()  # numpy scalars
    except AttributeError:
        return str(value)


def _fmt(v, floatfmt: str) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "–"
    if isinstance(v, (bool,)) or not isinstance(v, (int, float)):
        return str(v)
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    if 0 < abs(v) < 0.01:
        return f"{v:.2g}"
    return format(v, floatfmt)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A DataFrame as a GitHub Markdown table: whole numbers without decimals, tiny values in 2 significant
    digits, others with ``floatfmt``; missing values shown as "–"."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(_fmt(v, floatfmt) for v in r) + " |" for r in df.astype(object).to_numpy().tolist()]
    return "\n".join([head, sep, *rows]) + "\n"


class OutputWriter:
    """Writes a notebook's figures and tables to ``figures/<profile>/`` and records them in the manifest.

    Parameters
    ----------
    profile : str
    notebook : str
        Name of the notebook writing (e.g. ``"01_layerwise"``).
    params : dict
        The notebook's parameters, recorded for every file.
    data_files : iterable of path, optional
        Data files the results depend on; their sha256 is recorded (see :meth:`add_data_files`).
    out_dir : path, optional
        Override the output folder (tests).
    """

    def __init__(
        self,
        profile: str,
        notebook: str,
        params: dict,
        data_files: Iterable[str | os.PathLike] = (),
        out_dir: str | os.PathLike | None = None,
    ) -> None:
        self.profile = profile
        self.notebook = notebook
        self.params = _jsonable(params)
        self.dir = Path(out_dir) if out_dir is not None else figures_dir(profile)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.commit = git_commit()
        self.data_checksums: dict[str, str] = {}
        self.add_data_files(data_files)
        self.written: list[Path] = []
        self._claimed = False  # earlier entries of this notebook are dropped at its first write, not before:
        # a rerun that fails before writing anything leaves the manifest of the previous run intact

    # -- manifest ------------------------------------------------------------------------------------------------
    def _manifest_path(self) -> Path:
        return self.dir / MANIFEST

    def _load(self) -> dict:
        p = self._manifest_path()
        if not p.exists():
            return {"files": {}}
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return {"files": {}}

    def _claim_reset(self) -> None:
        """Forget this notebook's earlier entries (a rerun replaces them)."""
        m = self._load()
        m["files"] = {k: v for k, v in m["files"].items() if v.get("notebook") != self.notebook}
        _atomic_write_text(self._manifest_path(), json.dumps(m, indent=1, sort_keys=True))

    def add_data_files(self, files: Iterable[str | os.PathLike]) -> None:
        """Record the sha256 of data files the outputs depend on."""
        for f in files:
            p = Path(f)
            if p.is_file():
                self.data_checksums[str(p.resolve())] = file_sha256(p)

    def _record(self, path: Path, kind: str, extra: dict | None = None) -> None:
        if not self._claimed:
            self._claim_reset()
            self._claimed = True
        rel = path.relative_to(self.dir).as_posix()
        m = self._load()
        owner = m["files"].get(rel, {}).get("notebook")
        if owner is not None and owner != self.notebook:
            raise RuntimeError(
                f"{rel} was already written by notebook {owner!r}; {self.notebook!r} must use another file name"
            )
        m["files"][rel] = {
            "notebook": self.notebook,
            "kind": kind,
            "params": self.params,
            "git_commit": self.commit,
            "convexlib_version": __version__,
            "data_checksums": self.data_checksums,
            "sha256": file_sha256(path),
            "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }
        _atomic_write_text(self._manifest_path(), json.dumps(m, indent=1, sort_keys=True))
        self.written.append(path)

    def _check_free(self, rel: str) -> None:
        owner = self._load()["files"].get(rel, {}).get("notebook")
        if owner is not None and owner != self.notebook:
            raise RuntimeError(
                f"{rel} was already written by notebook {owner!r}; {self.notebook!r} must use another file name"
            )

    # -- writers -------------------------------------------------------------------------------------------------
    def figure(self, fig, name: str, *, formats: tuple[str, ...] = ("png", "pdf"), dpi: int = 150) -> list[Path]:
        """Save a matplotlib figure as ``<name>.png`` and ``<name>.pdf``."""
        out = []
        for ext in formats:
            self._check_free(f"{name}.{ext}")
            p = self.dir / f"{name}.{ext}"
            fig.savefig(p, dpi=dpi, bbox_inches="tight", metadata=None if ext != "png" else {"Software": None})
            self._record(p, "figure")
            out.append(p)
        return out

    def table(self, df: pd.DataFrame, name: str, *, floatfmt: str = ".2f", title: str | None = None) -> list[Path]:
        """Save a table as ``<name>.csv`` (full precision) and ``<name>.md`` (rounded, with an optional title)."""
        for ext in ("csv", "md"):
            self._check_free(f"{name}.{ext}")
        csv = self.dir / f"{name}.csv"
        tmp = csv.with_suffix(".csv.tmp")
        df.to_csv(tmp, index=False)
        os.replace(tmp, csv)
        self._record(csv, "table")
        md = self.dir / f"{name}.md"
        text = (f"**{title}**\n\n" if title else "") + markdown_table(df, floatfmt)
        _atomic_write_text(md, text)
        self._record(md, "table")
        return [csv, md]

    def text(self, content: str, name: str) -> Path:
        """Save a text/Markdown file (e.g. a note on what could not be computed)."""
        self._check_free(name)
        p = self.dir / name
        _atomic_write_text(p, content)
        self._record(p, "text")
        return p
