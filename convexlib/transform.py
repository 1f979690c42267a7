"""The naive affine alignment transform (SPEC §4.4), fitted to human odd-one-out triplets with object-wise CV.

An affine map ``x -> x W + b`` (row vectors, ``W`` square) is trained on the standardised representations of the
1,854 THINGS concepts so that the dot products of the transformed vectors predict the human odd-one-out
choices (Muttenthaler et al. 2023, the "naive"/global probe of ``LukasMut/gLocal``). The paper's Tables 1 and
A.2–A.6 report OOOA and graph convexity before and after it.

Conventions
-----------
- Triplets follow :mod:`convexlib.alignment`: ``(N, 3)`` int, columns 0 and 1 are the pair the human kept
  together, column 2 is the human odd one out.
- Standardisation: ``Z = (X - mean) / std`` with the statistics of the representations the transform is fitted
  on (all 1,854 concepts, also in cross-validation, as in the reference code). ``scale="scalar"`` (default, the
  published transforms) uses one mean and one std of the whole matrix; ``scale="dim"`` uses a per-dimension mean
  and std (dimensions with zero spread get std 1, as in :func:`convexlib.alignment.standardize`).
- Similarity ``z_ij = (z_i W + b) . (z_j W + b)``; loss = mean cross-entropy of ``softmax([z_01, z_02, z_12] / T)``
  with target 0 (the human pair), plus the regulariser: ``"l2"`` = ``lam * ||W||_F`` (unsquared, as the reference
  code), ``"l2_squared"`` = ``lam * ||W||_F^2`` (as the paper writes it), ``"eye"`` = gLocal's
  ``lam * sum((W - mean(diag W) I)^2)``.
- Optimisation (reference defaults): ``W = 1e-3 I``, ``b = 1e-3``; Adam, lr 1e-3 with ``LinearLR`` (factor 1/3 ->
  1 over ``max_epochs``, stepped per epoch); batch 256 with seeded shuffling; gradient-norm clipping 1.0; at least
  15 and at most 100 epochs; early stopping on the validation cross-entropy (patience 10 epochs, min delta 1e-4),
  which can only stop once the minimum number of epochs is reached. As in the reference (PyTorch Lightning), the
  returned weights are those of the *last* epoch run, not of the best one (``restore_best=True`` changes that).
- Cross-validation (:func:`cross_validate`): k folds over the *objects* (``object_folds``: identical to
  ``sklearn.model_selection.KFold(k, shuffle=True, random_state=seed)``); a triplet trains a fold when all its
  objects are training objects and validates it when all are held out; mixed triplets are dropped. lambda is
  chosen by the mean (over folds) final validation cross-entropy. OOOA before and after are reported on the
  same held-out *real human* triplets: before with the zero-shot rule of :func:`convexlib.alignment.
  odd_one_out_accuracy` (cosine of per-dimension-centred vectors by default), after with the dot product of the
  transformed vectors; both use the metric core's strict tie rule (a tie at the top is wrong).
- Training source: ``"human"`` (the real judgements inside the training objects; they are also the validation
  set for early stopping and lambda, as in the reference) or ``"vice"`` (triplets simulated from the VICE human
  embedding with a softmax choice model inside the training objects; early stopping and lambda then use triplets
  simulated inside the held-out objects, so the real held-out judgements are touched only for the report).

Determinism: the full fit is deterministic on CPU for a given seed and thread count. On CUDA, results can
differ in the last bits between runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .alignment import check_count, check_finite, check_jobs, odd_one_out_accuracy, validate_triplets
from .cache import array_checksum, entry_path, key_digest, load_arrays, open_npz, save_arrays
from .errors import CacheError, DataNotFoundError
from .paths import data_root as _resolve_data_root

Reg = Literal["l2", "l2_squared", "eye"]
TransformScale = Literal["scalar", "dim"]
TrainSource = Literal["human", "vice"]
FinalModel = Literal["last_fold", "refit"]

__all__ = [
    "DEFAULT_LAMBDAS",
    "REFERENCE_LAMBDAS",
    "AffineTransform",
    "FitHistory",
    "CVResult",
    "standardization_stats",
    "fit_transform",
    "object_folds",
    "split_triplets",
    "simulate_triplets",
    "cross_validate",
    "published_transform_paths",
    "load_published_transforms",
    "duplicate_files",
    "convexity_before_after",
    "table_row",
]

#: lambda grid used by default (three values, for the offline CPU budget): the reference default 1e-3 and the
#: next two decades up.
DEFAULT_LAMBDAS: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
#: the argparse choices of ``LukasMut/gLocal`` ``main_global_probing.py``.
REFERENCE_LAMBDAS: tuple[float, ...] = (1e3, 1e2, 1e1, 1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)

_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------------
# the transform object
# --------------------------------------------------------------------------------------------------------------


def _as_stat(value: Any, d: int, name: str) -> float | np.ndarray:
    """A mean/std as a float (scalar) or a float64 vector of length ``d``."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        v = float(arr)
        if not np.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        return v
    if arr.shape != (d,):
        raise ValueError(f"{name} must be a scalar or have shape ({d},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN/inf")
    return arr


@dataclass
class AffineTransform:
    """A fitted affine map applied as ``((X - mean) / std) @ weights + bias`` (row vectors).

    Attributes
    ----------
    weights : ndarray of shape (d, d)
    bias : ndarray of shape (d,) or None
    mean : float or ndarray of shape (d,)
        Standardisation mean: a scalar (published transforms, ``scale="scalar"``) or per dimension.
    std : float or ndarray of shape (d,)
        Standardisation std, strictly positive.
    meta : dict
        Free-form JSON-able description (hyper-parameters, fold, source file, ...).
    """

    weights: np.ndarray
    bias: np.ndarray | None
    mean: float | np.ndarray
    std: float | np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights)
        if w.ndim != 2 or w.shape[0] != w.shape[1]:
            raise ValueError(f"weights must be a square (d, d) matrix, got shape {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError("weights contain NaN/inf")
        d = w.shape[0]
        self.weights = w
        if self.bias is not None:
            b = np.asarray(self.bias).reshape(-1)
            if b.shape != (d,):
                raise ValueError(f"bias must have shape ({d},), got {np.asarray(self.bias).shape}")
            if not np.all(np.isfinite(b)):
                raise ValueError("bias contains NaN/inf")
            self.bias = b
        self.mean = _as_stat(self.mean, d, "mean")
        self.std = _as_stat(self.std, d, "std")
        if np.any(np.asarray(self.std) <= 0):
            raise ValueError("std must be strictly positive")

    @property
    def dim(self) -> int:
        """Feature dimension ``d``."""
        return int(self.weights.shape[0])

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / std`` in float64, shape (n, d)."""
        X = check_finite(X)
        if X.shape[1] != self.dim:
            raise ValueError(f"X has {X.shape[1]} features but the transform expects {self.dim}")
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.std

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Transform representations of the same layer: ``((X - mean) / std) @ weights + bias``.

        Parameters
        ----------
        X : array_like of shape (n, d)

        Returns
        -------
        ndarray of shape (n, d), float64
        """
        Z = self.standardize(X) @ self.weights.astype(np.float64)
        if self.bias is not None:
            Z = Z + self.bias.astype(np.float64)
        return Z

    __call__ = apply

    def save(self, path: str | os.PathLike) -> Path:
        """Write the published ``.npz`` layout (``weights``, optional ``bias``, ``mean``, ``std``), atomically.

        ``meta`` is added as a JSON string under the extra key ``meta``; readers of the published format ignore it.
        """
        path = Path(path)
        arrays: dict[str, np.ndarray] = {"weights": np.asarray(self.weights)}
        if self.bias is not None:
            arrays["bias"] = np.asarray(self.bias)
        arrays["mean"] = np.asarray(self.mean)
        arrays["std"] = np.asarray(self.std)
        arrays["meta"] = np.asarray(json.dumps(self.meta, sort_keys=True, default=_json_default))
        _atomic_savez(path, arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AffineTransform":
        """Read a transform written by :meth:`save` or a published gLocal ``transform.npz``."""
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"transform file {path} does not exist")
        with open_npz(path, "a transform .npz file (weights, mean, std)") as npz:
            keys = set(npz.files)
            missing = {"weights", "mean", "std"} - keys
            if missing:
                raise ValueError(f"{path} is not a transform file: missing key(s) {sorted(missing)}")
            meta: dict = {}
            if "meta" in keys:
                try:
                    meta = json.loads(str(npz["meta"]))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: the 'meta' entry is not valid JSON") from exc
                if not isinstance(meta, dict):
                    raise ValueError(f"{path}: the 'meta' entry must be a JSON object, got {type(meta).__name__}")
            meta.setdefault("source_file", str(path))
            return cls(
                weights=npz["weights"],
                bias=npz["bias"] if "bias" in keys else None,
                mean=npz["mean"],
                std=npz["std"],
                meta=meta,
            )


@dataclass
class FitHistory:
    """Per-epoch record of one fit.

    Attributes
    ----------
    train_loss : list of float
        Mean training cross-entropy per epoch (without the regulariser).
    val_loss : list of float
        Validation cross-entropy after each epoch (empty without validation triplets).
    lr : list of float
        Learning rate used in each epoch.
    epochs : int
        Epochs run.
    best_epoch : int or None
        0-based epoch with the lowest validation loss.
    stopped_early : bool
    final_val_loss : float or None
        Validation cross-entropy of the returned weights.
    seconds : float
        Wall time of the fit.
    """

    train_loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    epochs: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    final_val_loss: float | None = None
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------------------------


def standardization_stats(
    X: np.ndarray, scale: TransformScale = "scalar"
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """Mean and std used to standardise ``X`` before the transform.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    scale : {"scalar", "dim"}
        ``"scalar"``: ``X.mean()`` and ``X.std()`` of the whole matrix (the reference code, the published
        transforms). ``"dim"``: per-dimension mean and std (``ddof=0``); zero-spread dimensions get std 1, so
        ``(X - mean) / std`` equals ``alignment.standardize(X, center=True, scale="dim")``.

    Returns
    -------
    mean, std : float or ndarray of shape (d,)
    """
    X = np.asarray(check_finite(X), dtype=np.float64)
    if scale == "scalar":
        mean, std = float(X.mean()), float(X.std())
        if std <= 0:
            raise ValueError("X is constant: its standard deviation is 0, cannot standardise")
        return mean, std
    if scale == "dim":
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        return mean, np.where(std > 0, std, 1.0)
    raise ValueError(f"scale must be 'scalar' or 'dim', got {scale!r}")


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, str) or not (device in ("cpu", "cuda") or device.startswith("cuda:")):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def _pair_logits(E: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, 3, d) embeddings -> (B, 3) logits of the pairs (0,1), (0,2), (1,2).

    Written with ``unbind`` rather than fancy indexing: the backward of an index gather is a scatter that costs
    more than the two matrix products of a step at d = 768.
    """
    a, b, c = E.unbind(1)
    logits = torch.stack([(a * b).sum(-1), (a * c).sum(-1), (b * c).sum(-1)], dim=1)
    return logits if temperature == 1.0 else logits / temperature


def _ce(logits: torch.Tensor) -> torch.Tensor:
    """Per-triplet cross-entropy with target 0 (the human pair), shape (B,)."""
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


def _regulariser(W: torch.Tensor, lam: float, reg: Reg) -> torch.Tensor:
    if reg == "l2":
        return lam * torch.linalg.norm(W)
    if reg == "l2_squared":
        return lam * (W * W).sum()
    if reg == "eye":
        eye = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
        return lam * ((W - eye * torch.diagonal(W).mean()) ** 2).sum()
    raise ValueError(f"reg must be 'l2', 'l2_squared' or 'eye', got {reg!r}")


def _mean_ce(
    Z: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, t: torch.Tensor, temperature: float, chunk: int = 8192
) -> float:
    """Mean cross-entropy (target: the pair in columns 0, 1) over the triplets ``t``, without gradients."""
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(t), chunk):
            idx = t[i : i + chunk]
            E = Z[idx.reshape(-1)] @ W
            if b is not None:
                E = E + b
            total += float(_ce(_pair_logits(E.view(len(idx), 3, -1), temperature)).double().sum())
    return total / len(t)


def _parse_epochs(epochs: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(epochs, (tuple, list)) and len(epochs) == 2:
        lo, hi = (check_count(e, "each of epochs (min, max)") for e in epochs)
    else:
        lo = hi = check_count(epochs, "epochs (an int or a (min, max) pair)")
    if not (1 <= lo <= hi):
        raise ValueError(f"epochs must be (min, max) with 1 <= min <= max, got {epochs!r}")
    return lo, hi


def fit_transform(
    X: np.ndarray,
    train_triplets: np.ndarray,
    val_triplets: np.ndarray | None = None,
    *,
    lam: float = 1e-3,
    reg: Reg = "l2",
    scale: TransformScale = "scalar",
    bias: bool = True,
    epochs: int | tuple[int, int] = (15, 100),
    batch_size: int = 256,
    lr: float = 1e-3,
    patience: int = 10,
    min_delta: float = 1e-4,
    grad_clip: float | None = 1.0,
    init: float = 1e-3,
    temperature: float = 1.0,
    seed: int = 42,
    device: str | torch.device = "auto",
    restore_best: bool = False,
    num_threads: int | None = None,
    progress: bool = False,
) -> tuple[AffineTransform, FitHistory]:
    """Fit the naive affine transform on representations ``X`` and human (or simulated) triplets.

    Parameters
    ----------
    X : array_like of shape (n_items, d)
        Representations of all items; the standardisation statistics are computed on all rows.
    train_triplets : array_like of shape (N, 3), int
        Columns 0, 1: the pair kept together; column 2: the odd one out.
    val_triplets : array_like of shape (M, 3), int, optional
        Early-stopping set. Without it, exactly ``max_epochs`` epochs are run.
    lam : float
        Regularisation strength (>= 0).
    reg : {"l2", "l2_squared", "eye"}
        ``lam*||W||_F`` (reference code), ``lam*||W||_F^2`` (paper's Eq.), or gLocal's identity-shrinkage.
    scale : {"scalar", "dim"}
        Standardisation mode (see :func:`standardization_stats`).
    bias : bool
        Learn ``b`` (the paper's Eq. 1 has one).
    epochs : int or (int, int)
        ``(min_epochs, max_epochs)``; early stopping cannot stop before ``min_epochs``.
    batch_size, lr, patience, min_delta, grad_clip, init, temperature :
        Reference defaults (256, 1e-3, 10, 1e-4, 1.0, 1e-3, 1.0). ``grad_clip=None`` disables clipping.
    seed : int
        Seeds ``torch.manual_seed`` and the shuffling generator.
    device : {"auto", "cpu", "cuda"} or torch.device
    restore_best : bool
        Return the weights of the epoch with the lowest validation loss instead of the last epoch's.
    num_threads : int, optional
        CPU threads for torch during the fit (restored afterwards). ``None``: 1 thread when ``d <= 128`` (the
        per-step operations are then too small to gain from threads and suffer badly from oversubscription),
        torch's current setting otherwise. Results can differ in the last bits between thread counts.
    progress : bool
        Show a progress bar over epochs.

    Returns
    -------
    transform : AffineTransform
        ``weights`` (d, d) float32, ``bias`` (d,) float32 or None, ``mean``/``std`` float64.
    history : FitHistory
    """
    X = check_finite(X)
    n, d = X.shape
    tr = validate_triplets(train_triplets, n, name="train_triplets")
    va = None if val_triplets is None else validate_triplets(val_triplets, n, name="val_triplets")
    min_ep, max_ep = _parse_epochs(epochs)
    number = (int, float, np.integer, np.floating)
    if isinstance(lam, bool) or not isinstance(lam, number) or not (np.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    batch_size, patience = check_count(batch_size, "batch_size"), check_count(patience, "patience")
    seed = check_count(seed, "seed", 0)
    if grad_clip is not None and (isinstance(grad_clip, bool) or not isinstance(grad_clip, number)
                                  or not grad_clip > 0):
        raise ValueError(f"grad_clip must be a number > 0 or None, got {grad_clip!r}")
    if reg not in ("l2", "l2_squared", "eye"):
        raise ValueError(f"reg must be 'l2', 'l2_squared' or 'eye', got {reg!r}")
    if lr <= 0 or min_delta < 0 or temperature <= 0:
        raise ValueError("lr > 0, min_delta >= 0 and temperature > 0 are required")
    dev = _resolve_device(device)
    mean, std = standardization_stats(X, scale)

    threads_before = torch.get_num_threads()
    threads = num_threads if num_threads is not None else (1 if d <= 128 else threads_before)
    if threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    torch.set_num_threads(threads)
    try:
        transform, hist = _fit(
            X, tr, va, mean=mean, std=std, min_ep=min_ep, max_ep=max_ep, lam=lam, reg=reg, bias=bias,
            batch_size=batch_size, lr=lr, patience=patience, min_delta=min_delta, grad_clip=grad_clip, init=init,
            temperature=temperature, seed=seed, dev=dev, restore_best=restore_best, progress=progress,
        )
    finally:
        torch.set_num_threads(threads_before)
    transform.meta.update({
        "lam": float(lam),
        "reg": reg,
        "scale": scale,
        "bias": bool(bias),
        "epochs_run": hist.epochs,
        "epochs": [min_ep, max_ep],
        "batch_size": int(batch_size),
        "lr": float(lr),
        "patience": int(patience),
        "min_delta": float(min_delta),
        "grad_clip": None if grad_clip is None else float(grad_clip),
        "init": float(init),
        "temperature": float(temperature),
        "seed": int(seed),
        "restore_best": bool(restore_best),
        "n_train_triplets": int(len(tr)),
        "n_val_triplets": 0 if va is None else int(len(va)),
        "convexlib_version": __version__,
    })
    return transform, hist


def _fit(
    X: np.ndarray,
    tr: np.ndarray,
    va: np.ndarray | None,
    *,
    mean: float | np.ndarray,
    std: float | np.ndarray,
    min_ep: int,
    max_ep: int,
    lam: float,
    reg: Reg,
    bias: bool,
    batch_size: int,
    lr: float,
    patience: int,
    min_delta: float,
    grad_clip: float | None,
    init: float,
    temperature: float,
    seed: int,
    dev: torch.device,
    restore_best: bool,
    progress: bool,
) -> tuple[AffineTransform, FitHistory]:
    """The training loop of :func:`fit_transform` (inputs already validated)."""
    d = X.shape[1]
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    Z = torch.as_tensor((np.asarray(X, dtype=np.float64) - mean) / std, dtype=torch.float32, device=dev)
    tr_t = torch.as_tensor(tr, dtype=torch.long, device=dev)
    va_t = None if va is None else torch.as_tensor(va, dtype=torch.long, device=dev)
    W = torch.nn.Parameter(torch.eye(d, dtype=torch.float32, device=dev) * init)
    b = torch.nn.Parameter(torch.full((d,), init, dtype=torch.float32, device=dev)) if bias else None
    params = [W] + ([b] if b is not None else [])
    opt = torch.optim.Adam(params, lr=lr, foreach=True)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / 3.0, end_factor=1.0, total_iters=max_ep)

    hist = FitHistory()
    best = np.inf  # early-stopping reference (improvement must exceed min_delta)
    best_loss, best_state = np.inf, None
    wait = 0
    n_train = len(tr_t)
    bar = tqdm(range(max_ep), desc=f"fit lam={lam:g}", disable=not progress, leave=False)
    for epoch in bar:
        hist.lr.append(float(opt.param_groups[0]["lr"]))
        batches = tr_t[torch.randperm(n_train, generator=gen).to(dev)].split(batch_size)
        ce_sum = torch.zeros((), dtype=torch.float64, device=dev)
        for idx in batches:
            flat = Z[idx.reshape(-1)]
            E = torch.addmm(b, flat, W) if b is not None else flat @ W
            ce = _ce(_pair_logits(E.view(len(idx), 3, d), temperature)).mean()
            loss = ce + _regulariser(W, lam, reg) if lam > 0 else ce
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
            opt.step()
            ce_sum += ce.detach() * len(idx)
        sched.step()
        train_ce = float(ce_sum) / n_train
        if not np.isfinite(train_ce):
            raise FloatingPointError(f"training loss became {train_ce} at epoch {epoch}; lower lr or lam")
        hist.train_loss.append(train_ce)
        hist.epochs = epoch + 1
        if va_t is None:
            bar.set_postfix(train=f"{train_ce:.4f}")
            continue
        val = _mean_ce(Z, W.detach(), None if b is None else b.detach(), va_t, temperature)
        hist.val_loss.append(val)
        bar.set_postfix(train=f"{train_ce:.4f}", val=f"{val:.4f}")
        if val < best_loss:
            best_loss, hist.best_epoch = val, epoch
            if restore_best:
                best_state = [p.detach().clone() for p in params]
        if val < best - min_delta:
            best, wait = val, 0
        else:
            wait += 1
        if wait >= patience and epoch + 1 >= min_ep:
            hist.stopped_early = epoch + 1 < max_ep
            break
    if restore_best and best_state is not None:
        with torch.no_grad():
            for p, s in zip(params, best_state):
                p.copy_(s)
    if va_t is not None:
        hist.final_val_loss = _mean_ce(Z, W.detach(), None if b is None else b.detach(), va_t, temperature)
    hist.seconds = time.perf_counter() - t0
    transform = AffineTransform(
        weights=W.detach().cpu().numpy().astype(np.float32),
        bias=None if b is None else b.detach().cpu().numpy().astype(np.float32),
        mean=mean,
        std=std,
    )
    return transform, hist


# --------------------------------------------------------------------------------------------------------------
# folds, splits and simulated triplets
# --------------------------------------------------------------------------------------------------------------


def object_folds(n_items: int, k: int = 3, seed: int = 42) -> list[tuple[np.ndarray, np.ndarray]]:
    """k shuffled folds over the items, identical to ``KFold(k, shuffle=True, random_state=seed).split``.

    Parameters
    ----------
    n_items : int
    k : int
        Number of folds, ``2 <= k <= n_items``.
    seed : int
        Seed of ``np.random.RandomState`` used for the shuffle (as scikit-learn does).

    Returns
    -------
    list of k (train_items, heldout_items) pairs, each a sorted int64 array; the held-out sets partition
    ``range(n_items)`` and the first ``n_items % k`` folds hold one item more.
    """
    if not (isinstance(k, (int, np.integer)) and 2 <= k <= n_items):
        raise ValueError(f"k must be an integer with 2 <= k <= n_items ({n_items}), got {k!r}")
    order = np.arange(n_items)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(k, n_items // k, dtype=np.int64)
    sizes[: n_items % k] += 1
    folds = []
    start = 0
    for size in sizes:
        held = np.sort(order[start : start + size])
        mask = np.ones(n_items, dtype=bool)
        mask[held] = False
        folds.append((np.nonzero(mask)[0].astype(np.int64), held.astype(np.int64)))
        start += size
    return folds


def split_triplets(
    triplets: np.ndarray, train_items: np.ndarray, n_items: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Partition triplets by objects: all three in ``train_items`` -> train; none in it -> held out; else dropped.

    Parameters
    ----------
    triplets : array_like of shape (N, 3), int
    train_items : array_like of int
        Items of the training fold.
    n_items : int, optional
        Number of items (bound check).

    Returns
    -------
    train : ndarray of shape (N_train, 3), int64
    heldout : ndarray of shape (N_heldout, 3), int64
        Rows in their original order.
    """
    t = validate_triplets(triplets, n_items)
    raw = np.asarray(train_items).ravel()
    if raw.size and (not np.issubdtype(raw.dtype, np.integer) or raw.min() < 0
                     or (n_items is not None and raw.max() >= n_items)):
        raise ValueError(f"train_items must be item indices (integers in [0, {n_items or 'n_items'})), "
                         f"got dtype {raw.dtype} with range [{raw.min()}, {raw.max()}]")
    items = raw.astype(np.int64)
    size = int(max(t.max(), items.max() if items.size else -1)) + 1
    member = np.zeros(size, dtype=bool)
    member[items] = True
    inside = member[t]
    return t[inside.all(axis=1)], t[(~inside).all(axis=1)]


def simulate_triplets(
    embedding: np.ndarray, items: np.ndarray, n: int, seed: int, temperature: float = 1.0
) -> np.ndarray:
    """Odd-one-out triplets sampled from a similarity embedding with a softmax choice model.

    Three distinct objects are drawn uniformly from ``items``; the pair kept together is drawn with probability
    ``softmax([s_01, s_02, s_12] / temperature)`` of the pair dot products (VICE/SPoSE choice model).

    Parameters
    ----------
    embedding : ndarray of shape (n_items, p)
        E.g. the VICE embedding in THINGS order.
    items : array_like of int
        Objects allowed in the triplets (at least 3 distinct).
    n : int
        Number of triplets.
    seed : int
    temperature : float

    Returns
    -------
    ndarray of shape (n, 3), int64
        Columns 0, 1: the simulated pair kept together; column 2: the odd one out.
    """
    E = check_finite(embedding, "embedding").astype(np.float64, copy=False)
    items = np.unique(np.asarray(items, dtype=np.int64).ravel())
    if items.size < 3:
        raise ValueError(f"need at least 3 distinct items to form triplets, got {items.size}")
    if items[0] < 0 or items[-1] >= E.shape[0]:
        raise ValueError(f"items out of range for an embedding of {E.shape[0]} rows")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, items.size, size=(n, 3))
    while True:
        bad = (pos[:, 0] == pos[:, 1]) | (pos[:, 0] == pos[:, 2]) | (pos[:, 1] == pos[:, 2])
        if not bad.any():
            break
        pos[bad] = rng.integers(0, items.size, size=(int(bad.sum()), 3))
    t = items[pos]
    a, b, c = E[t[:, 0]], E[t[:, 1]], E[t[:, 2]]
    logits = np.stack([(a * b).sum(1), (a * c).sum(1), (b * c).sum(1)], axis=1) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    choice = (rng.random(n)[:, None] > np.cumsum(p, axis=1)[:, :2]).sum(axis=1)
    # pair kept -> (kept, kept, odd): 01 -> (0,1,2); 02 -> (0,2,1); 12 -> (1,2,0)
    order = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])[choice]
    return np.take_along_axis(t, order, axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------------------------
# cross-validation
# --------------------------------------------------------------------------------------------------------------


@dataclass
class CVResult:
    """Object-wise cross-validation of the naive transform for one representation.

    Accuracies are fractions in [0, 1]; :meth:`summary` gives percents.

    Attributes
    ----------
    lambdas : tuple of float
        The grid searched.
    chosen_lambda : float
        The lambda with the lowest mean validation cross-entropy.
    val_loss : dict
        lambda -> ndarray (k,) of the final validation cross-entropy per fold.
    oooa_after : dict
        lambda -> ndarray (k,) of the held-out OOOA after the transform per fold.
    epochs : dict
        lambda -> ndarray (k,) of epochs run per fold.
    oooa_before : ndarray of shape (k,)
        Zero-shot held-out OOOA per fold (same triplets as ``oooa_after``).
    oooa_orig : float
        Zero-shot OOOA on all triplets (the tables' "orig").
    n_eval : ndarray of shape (k,)
        Held-out real triplets per fold (the OOOA denominators).
    n_train : ndarray of shape (k,)
        Training triplets per fold.
    n_val : ndarray of shape (k,)
        Early-stopping/lambda-selection triplets per fold.
    correct_before, correct_after : ndarray of shape (sum(n_eval),), bool
        Per held-out triplet correctness (folds concatenated in order) for the chosen lambda; paired.
    heldout_fold : ndarray of shape (n_items,), int
        Fold in which each object is held out.
    transform : AffineTransform
        The final transform (see ``settings["final"]``: the last fold's model of the chosen lambda, as gLocal
        saves, or a refit on all triplets).
    settings : dict
    from_cache : bool
    """

    lambdas: tuple
    chosen_lambda: float
    val_loss: dict
    oooa_after: dict
    epochs: dict
    oooa_before: np.ndarray
    oooa_orig: float
    n_eval: np.ndarray
    n_train: np.ndarray
    n_val: np.ndarray
    correct_before: np.ndarray
    correct_after: np.ndarray
    heldout_fold: np.ndarray
    transform: AffineTransform
    settings: dict
    from_cache: bool = False

    @property
    def oooa_before_mean(self) -> float:
        """Mean over folds of the zero-shot held-out OOOA."""
        return float(np.mean(self.oooa_before))

    @property
    def oooa_after_mean(self) -> float:
        """Mean over folds of the held-out OOOA after the transform, chosen lambda (the reference's report)."""
        return float(np.mean(self.oooa_after[self.chosen_lambda]))

    def mean_val_loss(self) -> dict:
        """lambda -> mean validation cross-entropy over folds."""
        return {lam: float(np.mean(v)) for lam, v in self.val_loss.items()}

    def summary(self) -> dict:
        """Headline numbers in percent."""
        before = 100.0 * self.oooa_before_mean
        after = 100.0 * self.oooa_after_mean
        return {
            "oooa_orig": 100.0 * self.oooa_orig,
            "oooa_heldout_before": before,
            "oooa_heldout_after": after,
            "oooa_delta": after - before,
            "oooa_heldout_before_pooled": 100.0 * float(self.correct_before.mean()),
            "oooa_heldout_after_pooled": 100.0 * float(self.correct_after.mean()),
            "chosen_lambda": self.chosen_lambda,
            "n_eval": int(self.n_eval.sum()),
            "train_source": self.settings.get("train_source"),
        }


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` via a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _cv_to_arrays(res: CVResult) -> tuple[dict[str, np.ndarray], dict]:
    lams = list(res.lambdas)
    arrays = {
        "weights": res.transform.weights,
        "mean": np.atleast_1d(np.asarray(res.transform.mean, dtype=np.float64)),
        "std": np.atleast_1d(np.asarray(res.transform.std, dtype=np.float64)),
        "val_loss": np.stack([res.val_loss[lam] for lam in lams]),
        "oooa_after": np.stack([res.oooa_after[lam] for lam in lams]),
        "epochs": np.stack([res.epochs[lam] for lam in lams]),
        "oooa_before": res.oooa_before,
        "n_eval": res.n_eval,
        "n_train": res.n_train,
        "n_val": res.n_val,
        "correct_before": res.correct_before,
        "correct_after": res.correct_after,
        "heldout_fold": res.heldout_fold,
    }
    if res.transform.bias is not None:
        arrays["bias"] = res.transform.bias
    meta = {
        "format_version": _FORMAT_VERSION,
        "scalar_stats": bool(np.ndim(res.transform.mean) == 0),
        "lambdas": lams,
        "chosen_lambda": res.chosen_lambda,
        "oooa_orig": res.oooa_orig,
        "settings": res.settings,
        "transform_meta": res.transform.meta,
    }
    return arrays, meta


def _cv_from_arrays(arrays: dict[str, np.ndarray], meta: dict) -> CVResult:
    if meta.get("format_version") != _FORMAT_VERSION:
        raise CacheError(f"cache format {meta.get('format_version')} != {_FORMAT_VERSION}")
    lams = tuple(float(x) for x in meta["lambdas"])
    mean, std = arrays["mean"], arrays["std"]
    if meta["scalar_stats"]:
        mean, std = float(mean.reshape(())), float(std.reshape(()))
    transform = AffineTransform(
        weights=arrays["weights"],
        bias=arrays.get("bias"),
        mean=mean,
        std=std,
        meta=meta["transform_meta"],
    )
    return CVResult(
        lambdas=lams,
        chosen_lambda=float(meta["chosen_lambda"]),
        val_loss={lam: arrays["val_loss"][i] for i, lam in enumerate(lams)},
        oooa_after={lam: arrays["oooa_after"][i] for i, lam in enumerate(lams)},
        epochs={lam: arrays["epochs"][i] for i, lam in enumerate(lams)},
        oooa_before=arrays["oooa_before"],
        oooa_orig=float(meta["oooa_orig"]),
        n_eval=arrays["n_eval"],
        n_train=arrays["n_train"],
        n_val=arrays["n_val"],
        correct_before=arrays["correct_before"].astype(bool),
        correct_after=arrays["correct_after"].astype(bool),
        heldout_fold=arrays["heldout_fold"],
        transform=transform,
        settings=meta["settings"],
        from_cache=True,
    )


def _run_fits(
    X: np.ndarray,
    fold_data: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    lams: tuple[float, ...],
    seed: int,
    fit_kwargs: dict,
    n_jobs: int,
    progress: bool,
) -> dict:
    """Every (lambda, fold) fit of :func:`cross_validate` and its held-out OOOA, serially or in threads.

    Returns
    -------
    dict (lambda, fold) -> (AffineTransform, FitHistory, OOOAResult on the fold's held-out real triplets)
    """
    n_jobs = check_jobs(n_jobs)
    jobs = [(lam, f) for lam in lams for f in range(len(fold_data))]
    on_gpu = _resolve_device(fit_kwargs.get("device", "auto")).type != "cpu"
    workers = 1 if on_gpu else min(len(jobs), (os.cpu_count() or 1) if n_jobs == -1 else n_jobs)
    kw = dict(fit_kwargs)
    if workers > 1:
        kw["num_threads"] = kw.get("num_threads") or 1

    def one(job: tuple[float, int]) -> tuple:
        lam, f = job
        tr, va, ev = fold_data[f]
        T, hist = fit_transform(X, tr, va, lam=lam, seed=seed + f, **kw)
        return T, hist, odd_one_out_accuracy(T.apply(X), ev, similarity="dot", center=False)

    out: dict = {}
    with tqdm(total=len(jobs), desc="naive transform CV", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                out[job] = one(job)
                bar.update(1)
                bar.set_postfix(lam=f"{job[0]:g}", fold=job[1], acc=f"{100 * out[job][2].accuracy:.1f}")
            return out
        before = torch.get_num_threads()
        torch.set_num_threads(kw["num_threads"])  # the same count everywhere: fits never race on a change
        try:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                futures = {ex.submit(one, job): job for job in jobs}
                for fut in as_completed(futures):
                    out[futures[fut]] = fut.result()
                    bar.update(1)
        finally:
            torch.set_num_threads(before)
    return out


def cross_validate(
    X: np.ndarray,
    triplets: np.ndarray,
    *,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    k: int = 3,
    seed: int = 42,
    train_source: TrainSource = "human",
    vice_embedding: np.ndarray | None = None,
    n_simulated: int = 100_000,
    n_simulated_val: int = 10_000,
    sim_temperature: float = 1.0,
    zero_shot: dict | None = None,
    final: FinalModel = "last_fold",
    cache: bool | str | os.PathLike = False,
    progress: bool = True,
    n_jobs: int = 1,
    **fit_kwargs: Any,
) -> CVResult:
    """Object-wise k-fold cross-validation of the naive transform, with lambda chosen by validation loss.

    Parameters
    ----------
    X : array_like of shape (n_items, d)
        Representations of all concepts (rows indexed like the triplets; THINGS order for the real data).
    triplets : array_like of shape (N, 3), int
        Real human judgements (columns 0, 1 kept together, column 2 odd one out). Always the evaluation set;
        also the training set when ``train_source="human"``.
    lambdas : sequence of float
        Grid for lambda (default :data:`DEFAULT_LAMBDAS`; the reference grid is :data:`REFERENCE_LAMBDAS`).
    k, seed : int
        Folds over the objects and their shuffle seed (``object_folds``). Fold ``f`` is fitted with seed
        ``seed + f``; its simulated triplets use seeds derived from ``seed`` and ``f``.
    train_source : {"human", "vice"}
        Train on the real judgements inside the training objects (validation: those inside the held-out objects,
        as in the reference), or on ``n_simulated`` triplets simulated from ``vice_embedding`` inside the training
        objects (validation: ``n_simulated_val`` simulated inside the held-out objects).
    vice_embedding : ndarray of shape (n_items, p), optional
        Required for ``train_source="vice"``; rows in the same order as ``X``.
    n_simulated, n_simulated_val, sim_temperature :
        Size and temperature of the simulated sets (see :func:`simulate_triplets`).
    zero_shot : dict, optional
        Keyword arguments of :func:`convexlib.alignment.odd_one_out_accuracy` for "before" and "orig"
        (default ``{"similarity": "cosine", "center": True, "scale": "none"}``, the paper's zero-shot rule).
    final : {"last_fold", "refit"}
        The returned transform: the chosen lambda's last-fold model (what gLocal saves), or a refit on all
        training triplets (all real ones, or ``n_simulated`` simulated over all objects) for the mean number of
        epochs the folds ran, without early stopping.
    cache : bool or path
        Cache the result with :mod:`convexlib.cache`: ``True`` uses ``<cache_dir>/transforms``, a path uses that
        folder. The key holds the sha256 of X, of the triplets and of the VICE embedding, every setting, lambda
        grid, the library and torch versions, so a rerun does not refit. A broken entry is refitted (with a
        warning) and overwritten.
    progress : bool
        Progress bar over (lambda, fold).
    n_jobs : int
        (lambda, fold) fits run at once on the CPU, in threads (-1: one per core; always 1 on a GPU). Each
        concurrent fit uses ``num_threads`` torch threads (default 1). Measured on 2 cores: a step took 10.0 ms
        with 1 thread and 10.6 ms with 2 at d = 384, 27.7 and 20.9 ms at d = 768; two 1-thread fits side by side
        took 0.61x the time of the same fits one after the other (d = 384). The numbers of every fit are those of
        a serial run with the same ``num_threads`` (each fit is seeded on its own); between different thread
        counts they can differ in the last bits.
    **fit_kwargs :
        Passed to :func:`fit_transform` (``reg``, ``scale``, ``bias``, ``epochs``, ``batch_size``, ``lr``,
        ``patience``, ``min_delta``, ``grad_clip``, ``init``, ``temperature``, ``device``, ``restore_best``,
        ``num_threads``).

    Returns
    -------
    CVResult
    """
    X = check_finite(X)
    n, _ = X.shape
    t = validate_triplets(triplets, n)
    lams = tuple(float(x) for x in lambdas)
    if not lams:
        raise ValueError("lambdas must not be empty")
    if len(set(lams)) != len(lams):
        raise ValueError(f"lambdas must be distinct, got {lams}")
    if train_source not in ("human", "vice"):
        raise ValueError(f"train_source must be 'human' or 'vice', got {train_source!r}")
    if final not in ("last_fold", "refit"):
        raise ValueError(f"final must be 'last_fold' or 'refit', got {final!r}")
    vice = None
    if train_source == "vice":
        if vice_embedding is None:
            raise ValueError("train_source='vice' needs vice_embedding (e.g. data.load_vice_embedding(root))")
        vice = check_finite(vice_embedding, "vice_embedding")
        if vice.shape[0] != n:
            raise ValueError(f"vice_embedding has {vice.shape[0]} rows, X has {n}")
    allowed = {"reg", "scale", "bias", "epochs", "batch_size", "lr", "patience", "min_delta", "grad_clip", "init",
               "temperature", "device", "restore_best", "num_threads"}
    unknown = set(fit_kwargs) - allowed
    if unknown:
        raise TypeError(f"unknown fit argument(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    zs = {"similarity": "cosine", "center": True, "scale": "none"}
    zs.update(zero_shot or {})

    settings: dict[str, Any] = {
        "k": int(k),
        "seed": int(seed),
        "train_source": train_source,
        "n_simulated": int(n_simulated) if train_source == "vice" else None,
        "n_simulated_val": int(n_simulated_val) if train_source == "vice" else None,
        "sim_temperature": float(sim_temperature) if train_source == "vice" else None,
        "zero_shot": zs,
        "final": final,
        "fit": {key: (list(v) if isinstance(v, tuple) else v) for key, v in sorted(fit_kwargs.items())
                if key not in ("device", "num_threads")},
    }

    cache_path = key = None
    if cache:
        key = {
            "kind": "naive_transform_cv",
            "X": array_checksum(X),
            "triplets": array_checksum(t),
            "vice": None if vice is None else array_checksum(vice),
            "lambdas": list(lams),
            "settings": json.loads(json.dumps(settings, default=_json_default)),
            "convexlib_version": __version__,
            "torch_version": torch.__version__,
            "format": _FORMAT_VERSION,
        }
        if cache is True:
            cache_path = entry_path(key, "transforms")
        else:
            cache_path = Path(cache) / f"{key_digest(key)[:40]}.npz"
        try:
            arrays, meta = load_arrays(cache_path, expect_key=key)
            return _cv_from_arrays(arrays, meta)
        except FileNotFoundError:
            pass
        except (CacheError, KeyError, ValueError, TypeError) as exc:
            warnings.warn(f"transform cache entry {cache_path} cannot be used ({exc}); refitting", stacklevel=2)

    folds = object_folds(n, k, seed)
    heldout_fold = np.empty(n, dtype=np.int64)
    for f, (_, held) in enumerate(folds):
        heldout_fold[held] = f

    orig = odd_one_out_accuracy(X, t, **zs)
    # per-fold data: (train, val, eval)
    fold_data = []
    for f, (train_items, held) in enumerate(folds):
        h_train, h_eval = split_triplets(t, train_items, n)
        if len(h_eval) == 0:
            raise ValueError(
                f"fold {f}: no real triplet has all three objects held out; use fewer folds or more triplets"
            )
        if train_source == "human":
            tr, va = h_train, h_eval
        else:
            tr = simulate_triplets(vice, train_items, n_simulated, seed=seed * 1000 + 2 * f,
                                   temperature=sim_temperature)
            va = simulate_triplets(vice, held, n_simulated_val, seed=seed * 1000 + 2 * f + 1,
                                   temperature=sim_temperature)
        if len(tr) == 0:
            raise ValueError(f"fold {f}: no training triplet has all three objects in the training fold")
        fold_data.append((tr, va, h_eval))

    before_res = [odd_one_out_accuracy(X, ev, **zs) for _, _, ev in fold_data]
    oooa_before = np.array([r.accuracy for r in before_res])

    val_loss: dict = {}
    oooa_after: dict = {}
    epochs: dict = {}
    correct_after: dict = {}
    last_model: dict = {}
    fits = _run_fits(X, fold_data, lams, seed, fit_kwargs, n_jobs, progress)
    for lam in lams:
        vl, acc, ep, corr = [], [], [], []
        for f in range(k):
            T, hist, res = fits[(lam, f)]
            vl.append(hist.final_val_loss)
            acc.append(res.accuracy)
            ep.append(hist.epochs)
            corr.append(res.correct)
            T.meta.update({"fold": f, "k": int(k), "train_source": train_source})
            last_model[lam] = T
        val_loss[lam] = np.array(vl, dtype=np.float64)
        oooa_after[lam] = np.array(acc, dtype=np.float64)
        epochs[lam] = np.array(ep, dtype=np.int64)
        correct_after[lam] = np.concatenate(corr)
    mean_loss = {lam: float(np.mean(v)) for lam, v in val_loss.items()}
    chosen = min(lams, key=lambda lam: (mean_loss[lam], lams.index(lam)))

    if final == "last_fold":
        transform = last_model[chosen]
    else:
        n_ep = max(1, int(round(float(np.mean(epochs[chosen])))))
        if train_source == "human":
            tr_all = t
        else:
            tr_all = simulate_triplets(vice, np.arange(n), n_simulated, seed=seed * 1000 + 2 * k,
                                       temperature=sim_temperature)
        kw = dict(fit_kwargs)
        kw["epochs"] = (n_ep, n_ep)
        transform, _ = fit_transform(X, tr_all, None, lam=chosen, seed=seed + k, **kw)
        transform.meta.update({"fold": None, "k": int(k), "train_source": train_source, "refit": True})

    result = CVResult(
        lambdas=lams,
        chosen_lambda=chosen,
        val_loss=val_loss,
        oooa_after=oooa_after,
        epochs=epochs,
        oooa_before=oooa_before,
        oooa_orig=orig.accuracy,
        n_eval=np.array([len(ev) for _, _, ev in fold_data], dtype=np.int64),
        n_train=np.array([len(tr) for tr, _, _ in fold_data], dtype=np.int64),
        n_val=np.array([len(va) for _, va, _ in fold_data], dtype=np.int64),
        correct_before=np.concatenate([r.correct for r in before_res]),
        correct_after=correct_after[chosen],
        heldout_fold=heldout_fold,
        transform=transform,
        settings=settings,
    )
    if cache_path is not None:
        arrays, meta = _cv_to_arrays(result)
        meta["key"] = key
        save_arrays(cache_path, arrays, json.loads(json.dumps(meta, default=_json_default)))
    return result


# --------------------------------------------------------------------------------------------------------------
# published gLocal transforms
# --------------------------------------------------------------------------------------------------------------


def published_transform_paths(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The gLocal ``transform.npz`` files under ``<data root>/glocal/transforms``.

    Returns
    -------
    dict
        ``"<model>/<module>"`` (the folder relative to ``transforms/``; some model names contain a slash) -> path,
        sorted by name.
    """
    base = _resolve_data_root(root) / "glocal" / "transforms"
    if not base.is_dir():
        raise DataNotFoundError(f"{base} does not exist; see glocal/PROVENANCE.md in the shared data")
    found = {p.parent.relative_to(base).as_posix(): p for p in base.rglob("transform.npz")}
    if not found:
        raise DataNotFoundError(f"no transform.npz under {base}")
    return dict(sorted(found.items()))


def duplicate_files(paths: dict[str, Path]) -> list[list[str]]:
    """Groups (of two or more names) whose files are byte-identical (sha256 of the content)."""
    by_hash: dict[str, list[str]] = {}
    for name, p in paths.items():
        by_hash.setdefault(hashlib.sha256(Path(p).read_bytes()).hexdigest(), []).append(name)
    return [sorted(v) for v in by_hash.values() if len(v) > 1]


def load_published_transforms(
    root: str | os.PathLike | None = None, *, warn_duplicates: bool = True
) -> dict[str, AffineTransform]:
    """Load every published gLocal transform, warning when two files are byte-identical.

    Two of the stored files (``dino-vit-base-p16/norm`` and ``dinov2-vit-base-p14/norm``) are byte-identical, so
    at most one of them can belong to its model; the warning names each such group, and each transform's
    ``meta["duplicate_of"]`` lists the other names of its group.

    Returns
    -------
    dict
        name -> AffineTransform (``meta["source_file"]`` holds the path).
    """
    paths = published_transform_paths(root)
    groups = duplicate_files(paths)
    out = {name: AffineTransform.load(p) for name, p in paths.items()}
    for g in groups:
        for name in g:
            out[name].meta["duplicate_of"] = [o for o in g if o != name]
        if warn_duplicates:
            warnings.warn(
                f"published transforms {g} are byte-identical files; at most one of them can be the transform "
                "fitted for its model", UserWarning, stacklevel=2,
            )
    return out


# --------------------------------------------------------------------------------------------------------------
# convexity before/after and the table row
# --------------------------------------------------------------------------------------------------------------


def convexity_before_after(
    transform: AffineTransform,
    X_superclass: np.ndarray,
    labels: Sequence[Any] | np.ndarray,
    *,
    seed: int = 42,
    n_boot: int = 2000,
    ci: float = 0.95,
    boot_seed: int = 0,
    **convexity_kwargs: Any,
) -> dict:
    """Graph convexity of the superclass images before and after the transform, with a paired bootstrap CI.

    "Before" is the graph on the raw representations (a Euclidean kNN graph and its shortest paths do not
    change under the scalar standardisation, so in the default mode this is also the standardised space);
    "after" is the graph on ``transform.apply(X_superclass)``. Both runs use the same seed, points and labels, so
    they sample the same pairs and the per-path scores are paired; the CI of the difference comes from
    :func:`convexlib.stats.paired_bootstrap_ci` with the classes as groups (its statistic is the mean of class
    means, i.e. the difference of the two ``score`` values).

    Parameters
    ----------
    transform : AffineTransform
        Fitted on the triplet images' representations of the same layer.
    X_superclass : ndarray of shape (n, d)
        The layer's representations of the superclass images.
    labels : sequence of length n
    seed : int
        Pair-sampling seed of both convexity runs (the paper: 42).
    n_boot, ci, boot_seed :
        Bootstrap resamples, confidence level and seed.
    **convexity_kwargs :
        Passed to :func:`convexlib.convexity.graph_convexity` (``n_neighbors``, ``max_paths``, ``metric``, ...).

    Returns
    -------
    dict
        ``convexity_orig``, ``convexity_transf``, ``convexity_delta`` (transf - orig), ``convexity_delta_ci_low``,
        ``convexity_delta_ci_high`` (all percent), ``ci_level``, ``n_paths``, and the two ``ConvexityResult``
        objects under ``before`` and ``after``.
    """
    from .convexity import graph_convexity
    from .stats import paired_bootstrap_ci

    X_superclass = check_finite(X_superclass, "X_superclass")
    before = graph_convexity(X_superclass, labels, seed=seed, **convexity_kwargs)
    after = graph_convexity(transform.apply(X_superclass), labels, seed=seed, **convexity_kwargs)
    if set(before.path_scores) != set(after.path_scores):
        raise ValueError("before/after convexity scored different classes; cannot pair them")
    a_parts, b_parts, groups = [], [], []
    for c, key in enumerate(before.path_scores):
        if not np.array_equal(before.pairs[key], after.pairs[key]):
            raise ValueError(f"class {key!r}: before/after sampled different pairs; they are not paired")
        a_parts.append(np.asarray(before.path_scores[key], dtype=np.float64))
        b_parts.append(np.asarray(after.path_scores[key], dtype=np.float64))
        groups.append(np.full(len(a_parts[-1]), c))
    diff = paired_bootstrap_ci(
        100.0 * np.concatenate(a_parts), 100.0 * np.concatenate(b_parts), groups=np.concatenate(groups),
        n_boot=n_boot, ci=ci, seed=boot_seed,
    )
    return {
        "convexity_orig": before.score,
        "convexity_transf": after.score,
        "convexity_delta": after.score - before.score,
        "convexity_delta_ci_low": diff.ci_low,
        "convexity_delta_ci_high": diff.ci_high,
        "ci_level": float(ci),
        "n_paths": int(diff.n),
        "before": before,
        "after": after,
    }


def table_row(model: str, layer: Any, cv: CVResult, convexity: dict | None = None) -> dict:
    """One row of Table 1 / A.2–A.6: OOOA orig and delta, convexity orig and delta (percent).

    ``oooa_delta`` is the held-out OOOA after minus before on the same held-out triplets (mean over folds);
    ``oooa_delta_vs_orig`` compares the held-out "after" with the all-triplet zero-shot "orig" instead (the
    other possible reading of the tables).
    """
    s = cv.summary()
    row = {
        "model": model,
        "layer": layer,
        "oooa_orig": s["oooa_orig"],
        "oooa_heldout_before": s["oooa_heldout_before"],
        "oooa_transf": s["oooa_heldout_after"],
        "oooa_delta": s["oooa_delta"],
        "oooa_delta_vs_orig": s["oooa_heldout_after"] - s["oooa_orig"],
        "lambda": cv.chosen_lambda,
        "train_source": cv.settings.get("train_source"),
        "n_eval": s["n_eval"],
    }
    if convexity is not None:
        row.update({key: v for key, v in convexity.items() if key not in ("before", "after")})
    return row
