"""Run the notebooks in order through papermill: ``python -m convexlib.runner [--profile offline] ...``.

The notebooks are jupytext percent scripts in ``notebooks/``. Each is converted in memory, given a kernel name
and language (papermill needs both), parameterised, executed with a per-cell timeout, and saved executed under
``figures/<profile>/executed/`` (not tracked). Parameters are validated before anything runs: unknown names,
wrong types and unknown profiles or models stop the run with one clear message. A failing cell is reported with
the notebook, the cell number and the error; a dying kernel (e.g. out of memory) is reported by name.

Examples
--------
::

    python -m convexlib.runner                         # all notebooks, offline profile
    python -m convexlib.runner --profile tiny          # the CI smoke run
    python -m convexlib.runner --only 01 02 -p max_paths=1000 -p seed=1
    python -m convexlib.runner --list                  # notebooks and their parameters
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import figures_dir, repo_root

NOTEBOOK_DIR = "notebooks"
KERNEL = "python3"


class RunnerError(Exception):
    """A notebook run could not be started or failed; the message says which and why."""


@dataclass(frozen=True)
class Notebook:
    """A notebook script and the defaults of its ``parameters`` cell."""

    path: Path
    defaults: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.stem


def notebook_paths(root: Path | None = None) -> list[Path]:
    """The notebook scripts in run order (file names start with a two-digit number)."""
    nb_dir = (root or repo_root()) / NOTEBOOK_DIR
    return sorted(p for p in nb_dir.glob("[0-9][0-9]_*.py"))


def read_notebook(path: Path):
    """Read a jupytext percent script into an nbformat notebook with kernel name and language set."""
    import jupytext

    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def parameter_defaults(nb, name: str = "") -> dict[str, Any]:
    """Literal values of the single cell tagged ``parameters``.

    Raises
    ------
    RunnerError
        No such cell, several, or a value that is not a plain literal.
    """
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise RunnerError(f"notebook {name} must have exactly one cell tagged 'parameters', found {len(cells)}")
    out: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring / comment string
        if not (isinstance(node, (ast.Assign, ast.AnnAssign))):
            raise RunnerError(f"notebook {name}: the parameters cell may only assign literal values")
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if not isinstance(target, ast.Name):
            raise RunnerError(f"notebook {name}: parameters must be plain names")
        try:
            out[target.id] = ast.literal_eval(node.value)
        except ValueError as exc:
            raise RunnerError(f"notebook {name}: parameter {target.id} is not a literal value") from exc
    return out


def load_notebooks(only: list[str] | None = None) -> list[Notebook]:
    """The notebooks to run (all, or those whose name starts with one of ``only``)."""
    paths = notebook_paths()
    if not paths:
        raise RunnerError(f"no notebooks found in {repo_root() / NOTEBOOK_DIR}")
    if only:
        chosen = [p for p in paths if any(p.stem.startswith(o) for o in only)]
        missing = [o for o in only if not any(p.stem.startswith(o) for p in paths)]
        if missing:
            raise RunnerError(f"no notebook matches {missing}; available: {[p.stem for p in paths]}")
        paths = chosen
    return [Notebook(p, parameter_defaults(read_notebook(p), p.stem)) for p in paths]


def parse_value(text: str) -> Any:
    """Parse a ``-p name=value`` value: a Python literal if it is one (``[1, 2]``, ``3``, ``True``), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _type_ok(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    if isinstance(default, dict):
        return isinstance(value, dict)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def validate_parameters(notebooks: list[Notebook], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Check names and types of ``params`` against the notebooks' parameter cells, then the profile.

    Every given name must be a parameter of at least one notebook; each notebook receives the ones it has.

    Returns
    -------
    dict notebook name -> the parameters to inject into it.
    """
    from . import profiles

    known: dict[str, Any] = {}
    for nb in notebooks:
        for k, v in nb.defaults.items():
            known.setdefault(k, v)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise RunnerError(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
    for k, v in params.items():
        if not _type_ok(v, known[k]):
            raise RunnerError(
                f"parameter {k}={v!r} has type {type(v).__name__}, expected {type(known[k]).__name__} "
                f"(default {known[k]!r})"
            )
    merged = {k: params.get(k, v) for k, v in known.items()}
    profiles.resolve(**{k: v for k, v in merged.items() if k in profiles.PARAMETERS})
    profiles.check_notebook_values(merged)
    return {nb.name: {k: v for k, v in params.items() if k in nb.defaults} for nb in notebooks}


def execute(nb: Notebook, params: dict[str, Any], out_dir: Path, timeout: int, progress: bool = True) -> float:
    """Execute one notebook; return its wall time in seconds. Raises RunnerError naming the failure."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{nb.name}.ipynb"
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            read_notebook(nb.path),
            str(out),
            parameters=params,
            kernel_name=KERNEL,
            language="python",
            cwd=str(repo_root()),
            execution_timeout=timeout,
            progress_bar=progress,
            log_output=False,
        )
    except PapermillExecutionError as exc:
        raise RunnerError(
            f"notebook {nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
            f"(executed notebook with the traceback: {out})"
        ) from None
    except Exception as exc:  # nbclient's DeadKernelError, CellTimeoutError, kernel start failures
        kind = type(exc).__name__
        if kind == "DeadKernelError":
            raise RunnerError(
                f"notebook {nb.name}: the kernel died (most often out of memory); partial output in {out}"
            ) from None
        if kind in ("CellTimeoutError", "TimeoutError"):
            raise RunnerError(f"notebook {nb.name}: a cell ran longer than the timeout of {timeout} s") from None
        raise RunnerError(f"notebook {nb.name} could not be executed: {kind}: {exc}") from None
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m convexlib.runner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=None, help="offline (default), paper or tiny")
    ap.add_argument("--only", nargs="+", help="run only notebooks whose name starts with these (e.g. 01 02)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                    help="set a notebook parameter (Python literal or string); repeatable")
    ap.add_argument("--data-root", help="data root (else $CONVEXLIB_DATA)")
    ap.add_argument("--cache-dir", help="cache directory (else $CONVEXLIB_CACHE or .cache)")
    ap.add_argument("--device", help="auto, cpu or cuda")
    ap.add_argument("--timeout", type=int, default=3600, help="per-cell execution timeout in seconds")
    ap.add_argument("--list", action="store_true", help="list notebooks and their parameters, then exit")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        notebooks = load_notebooks(args.only)
        if args.list:
            for nb in notebooks:
                print(f"{nb.name}: " + ", ".join(f"{k}={v!r}" for k, v in nb.defaults.items()))
            return 0
        params: dict[str, Any] = {}
        for item in args.param:
            if "=" not in item:
                raise RunnerError(f"-p expects NAME=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            params[k.strip()] = parse_value(v.strip())
        for name, value in (("profile", args.profile), ("data_root", args.data_root),
                            ("cache_dir", args.cache_dir), ("device", args.device)):
            if value is not None:
                params[name] = value
        per_nb = validate_parameters(notebooks, params)
        profile = params.get("profile", notebooks[0].defaults.get("profile", "offline"))
        out_dir = figures_dir(profile) / "executed"
        total = 0.0
        for nb in notebooks:
            print(f"[runner] {nb.name} (profile {profile}) ...", flush=True)
            dt = execute(nb, per_nb[nb.name], out_dir, args.timeout, progress=not args.no_progress)
            total += dt
            print(f"[runner] {nb.name} done in {dt:.1f} s", flush=True)
        print(f"[runner] all {len(notebooks)} notebooks done in {total:.1f} s; outputs in {figures_dir(profile)}")
        return 0
    except RunnerError as exc:
        print(f"[runner] error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # profile validation
        print(f"[runner] error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    raise SystemExit(main())
