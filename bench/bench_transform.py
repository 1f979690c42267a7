"""Benchmark: one fit of the naive transform (one lambda, one fold) at paper scale.

Target (issue 6): d = 768, 1,854 objects, 100,000 training triplets, 2 CPU cores: <= 2 minutes.

The representations are synthetic: a random non-negative latent "human" space H (1854 x 42, the VICE dimension,
scaled so that H predicts its own simulated choices about as well as VICE predicts real ones, ~63%) mapped to
768 dimensions by a random linear map, plus noise. The 100,000 training triplets are simulated from H inside the
training objects of fold 0 (3-fold object split, seed 42), 10,000 validation triplets inside its held-out objects,
with the softmax choice model of :func:`convexlib.transform.simulate_triplets`. The fit uses the reference
defaults (Adam 1e-3 with the linear schedule, batch 256, 15-100 epochs, early stopping patience 10).

Usage::

    .venv/bin/python bench/bench_transform.py                 # full fit, 2 threads, CPU
    .venv/bin/python bench/bench_transform.py --max-epochs 3  # quick: time per epoch only
    .venv/bin/python bench/bench_transform.py --device cuda --json out.json
"""

from __future__ import annotations

import os

# On a shared machine, OpenMP's default spin-waiting makes torch's 2-thread matmuls 10-30x slower as soon as
# another process holds a core; passive waiting costs nothing measurable when the machine is quiet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from convexlib.alignment import odd_one_out_accuracy  # noqa: E402
from convexlib.transform import fit_transform, object_folds, simulate_triplets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--n-items", type=int, default=1854)
    ap.add_argument("--n-triplets", type=int, default=100_000)
    ap.add_argument("--n-val", type=int, default=10_000)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--min-epochs", type=int, default=15)
    ap.add_argument("--lam", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--json", default=None, help="write the numbers to this file")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    H = np.abs(rng.normal(size=(args.n_items, 42))) * 0.55  # its own OOOA on simulated triplets: ~63%
    X = H @ rng.normal(size=(42, args.d)) + 0.5 * rng.normal(size=(args.n_items, args.d))
    train_items, held = object_folds(args.n_items, 3, 42)[0]
    tr = simulate_triplets(H, train_items, args.n_triplets, seed=1)
    va = simulate_triplets(H, held, args.n_val, seed=2)

    t0 = time.perf_counter()
    T, hist = fit_transform(
        X, tr, va, lam=args.lam, epochs=(min(args.min_epochs, args.max_epochs), args.max_epochs), seed=42,
        device=args.device, num_threads=args.threads,
    )
    seconds = time.perf_counter() - t0
    steps_per_epoch = int(np.ceil(len(tr) / 256))
    per_epoch = seconds / hist.epochs
    out = {
        "d": args.d,
        "n_items": args.n_items,
        "n_train_triplets": len(tr),
        "n_val_triplets": len(va),
        "device": args.device,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_1min": os.getloadavg()[0],
        "seconds_fit": round(seconds, 2),
        "epochs_run": hist.epochs,
        "stopped_early": hist.stopped_early,
        "best_epoch": hist.best_epoch,
        "seconds_per_epoch": round(per_epoch, 3),
        "ms_per_step": round(1e3 * per_epoch / steps_per_epoch, 2),
        "projected_seconds_min_epochs": round(per_epoch * args.min_epochs, 1),
        "projected_seconds_max_epochs": round(per_epoch * 100, 1),
        "final_val_loss": hist.final_val_loss,
        "val_loss_first_last": [hist.val_loss[0], hist.val_loss[-1]] if hist.val_loss else None,
        "heldout_oooa_latent": odd_one_out_accuracy(H, va, similarity="dot", center=False).percent,
        "heldout_oooa_before": odd_one_out_accuracy(X, va).percent,
        "heldout_oooa_after": odd_one_out_accuracy(T.apply(X), va, similarity="dot", center=False).percent,
        "budget_s": args.budget_s,
        "within_budget": seconds <= args.budget_s,
    }
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
