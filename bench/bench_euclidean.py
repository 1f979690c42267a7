"""Benchmark and offline measurement of Euclidean convexity (issue 11). Run on demand, not in CI:

    .venv/bin/python bench/bench_euclidean.py speed              # pairs/s at block 6, batched vs one call per pair
    .venv/bin/python bench/bench_euclidean.py cifar --out /tmp/euclid.json   # per-block table, DINOv2-S, CIFAR-10

Model: the offline DINOv2 ViT-S/14 (``dinov2-s-imgfocus``, 12 blocks, 257 tokens x 384). Data: the CIFAR-10
test images under ``$CONVEXLIB_DATA/cifar10`` (random pixels for ``speed`` when they are absent).

speed
    Token states of ``2 x --items`` CIFAR images at ``--layer``; ``--pairs`` same-class pairs (explicit, the same
    for both runs) scored with ``batch_size=--batch`` (batched across pairs) and with ``batch_size=n_sampled``
    (one forward per pair, the reference's structure). ``torch.set_num_threads(--threads)``. Each mode runs
    ``--repeats`` times, alternating; best and median times are reported. Pair scores of both modes are compared.

cifar
    A seeded per-class split of the 10,000 test images: ``--train`` per class for the probe, ``--test`` per class
    for the measurement. Probe: logistic regression on the last block's head input (DINOv2 readout: normed
    CLS + mean of normed patch tokens), C chosen by 5-fold CV on the training split, its test accuracy
    reported. For every block: Euclidean convexity with
    ``--pairs`` unordered pairs per class and 10 points per pair, and graph convexity (k = 10, all ordered pairs)
    of the same test images' CLS token (the project's pooling, before the final norm).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexlib import euclidean as E  # noqa: E402
from convexlib.models import load_model  # noqa: E402

MODEL = "dinov2-s-imgfocus"


def _cifar(n_per_class: int, seed: int = 0):
    from convexlib.data.images import cifar10_images
    from convexlib.errors import DataNotFoundError

    try:
        return cifar10_images(n_per_class=n_per_class, seed=seed)
    except DataNotFoundError as exc:
        print(f"[no CIFAR-10 data: {exc}; using random pixels]")
        return None


def speed(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model = load_model(MODEL)
    data = _cifar(args.items)
    if data is not None:
        keep = np.concatenate([np.nonzero(data.labels == c)[0] for c in np.unique(data.labels)[:2]])
        data = data.subset(keep)
        labels = data.labels
        states = E.token_states(model, data, args.layer, progress=False)[args.layer]
    else:
        labels = np.repeat(["a", "b"], args.items)
        pix = torch.randn(len(labels), 3, 224, 224, generator=torch.Generator().manual_seed(0))
        states = E.token_states(model, pix, args.layer, progress=False)[args.layer]
    rng = np.random.default_rng(0)
    feats = E.forward_from_layer(model, torch.from_numpy(states), model.n_layers).numpy()
    probe = E.train_linear_probe(feats, labels, cache=False)  # a classifier on these items (cost is not timed)
    pairs = {}
    per = [args.pairs // 2, args.pairs - args.pairs // 2]
    for c, m in zip(np.unique(labels), per):
        idx = np.nonzero(labels == c)[0]
        pr = E.sample_unordered_pairs(len(idx), m, rng)
        pairs[c] = idx[pr]
    times = {"batched": [], "per_pair": []}
    scores = {}
    for rep in range(args.repeats):
        for mode, bs in (("batched", args.batch), ("per_pair", 10)):
            t0 = time.perf_counter()
            res = E.euclidean_convexity(model, args.layer, states, labels, classifier=probe, pairs=pairs,
                                        batch_size=bs)
            times[mode].append(time.perf_counter() - t0)
            scores[mode] = np.concatenate([res.pair_scores[c] for c in res.pair_scores])
    n_pairs = sum(len(v) for v in pairs.values())
    out = {
        "model": MODEL, "layer": args.layer, "threads": args.threads, "pairs": n_pairs, "n_sampled": 10,
        "batch": args.batch, "images": bool(data is not None),
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "pairs_per_s": {k: round(n_pairs / min(v), 3) for k, v in times.items()},
        "pairs_per_s_median": {k: round(n_pairs / float(np.median(v)), 3) for k, v in times.items()},
        "speedup": round(min(times["per_pair"]) / min(times["batched"]), 3),
        "speedup_median": round(float(np.median(times["per_pair"]) / np.median(times["batched"])), 3),
        "max_pair_score_diff": float(np.abs(scores["batched"] - scores["per_pair"]).max()),
        "load_avg": os.getloadavg(),
    }
    print(json.dumps(out, indent=1))
    return out


CV_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def choose_C(X: np.ndarray, y: np.ndarray, grid, folds: int, seed: int, scores: dict) -> float:
    """The C of ``grid`` with the best mean accuracy over stratified ``folds``-fold CV on the training split."""
    fold = np.empty(len(y), dtype=np.int64)
    for k, c in enumerate(np.unique(y)):
        idx = np.nonzero(y == c)[0]
        fold[np.random.default_rng([seed, k]).permutation(idx)] = np.arange(len(idx)) % folds
    for C in grid:
        accs = []
        for f in range(folds):
            p = E.train_linear_probe(X[fold != f], y[fold != f], C=C, cache=False)
            accs.append(float(np.mean(p.predict(X[fold == f]) == y[fold == f])))
        scores[C] = float(np.mean(accs))
    best = max(grid, key=lambda c: (scores[c], -c))
    print(f"probe C by {folds}-fold CV on the training split: {scores} -> C = {best}", flush=True)
    return best


def cifar(args: argparse.Namespace) -> dict:
    from convexlib.convexity import graph_convexity
    from convexlib.data.images import cifar10_images

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    model = load_model(MODEL)
    full = cifar10_images()
    tr_idx, te_idx = E.stratified_split(full.labels, args.train, args.test, seed=args.seed)
    train = full.subset(tr_idx, name=f"cifar10-train{args.train}-s{args.seed}")
    test = full.subset(te_idx, name=f"cifar10-test{args.test}-s{args.seed}")
    timings = {}

    t0 = time.perf_counter()
    train_feats = E.head_features(model, train, progress=False)
    cv = {}
    if args.C == "cv":
        C = choose_C(train_feats, train.labels, CV_GRID, folds=5, seed=args.seed, scores=cv)
    else:
        C = float(args.C)
    probe = E.train_linear_probe(train_feats, train.labels, readout=E.resolve_readout(model), C=C)
    timings["probe (train features + fit)"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    layers = list(range(1, model.n_layers + 1))
    states = E.token_states(model, test, layers, dtype=np.float32, progress=False)
    timings["test token states"] = time.perf_counter() - t0
    labels = test.labels
    test_feats = E.forward_from_layer(model, torch.from_numpy(states[model.n_layers]), model.n_layers).numpy()
    test_acc = float(np.mean(probe.predict(test_feats) == labels))
    print(f"probe: train acc {probe.info['train_accuracy']:.3f} on {len(train)}, test acc {test_acc:.3f} on "
          f"{len(test)}; readout {probe.readout}", flush=True)

    rows = []
    t0 = time.perf_counter()
    for layer in layers:
        t1 = time.perf_counter()
        g = graph_convexity(states[layer][:, 0].astype(np.float32), labels, n_neighbors=10, seed=args.seed,
                            n_jobs=1)
        tg = time.perf_counter() - t1
        t1 = time.perf_counter()
        e = E.euclidean_convexity(model, layer, states[layer], labels, classifier=probe, n_pairs=args.pairs,
                                  seed=args.seed, batch_size=args.batch)
        te = time.perf_counter() - t1
        rows.append({"layer": layer, "euclidean": e.score, "euclidean_sem": e.sem, "graph": g.score,
                     "graph_sem": g.sem, "euclidean_pairs": sum(e.n_pairs.values()),
                     "graph_paths": sum(g.n_paths.values()), "lambda_profile": e.lambda_profile.tolist(),
                     "seconds_euclidean": te, "seconds_graph": tg})
        print(f"block {layer:2d}: Euclidean {e.score:6.2f} (SEM {e.sem:4.2f})  graph {g.score:6.2f} "
              f"(SEM {g.sem:4.2f})  [{te:.0f} s]", flush=True)
    timings["per-block metrics"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    out = {"model": MODEL, "split": {"train_per_class": args.train, "test_per_class": args.test, "seed": args.seed},
           "probe": {**probe.info, "test_accuracy": test_acc, "readout": probe.readout,
                     "cv_accuracy": {str(k): v for k, v in cv.items()}},
           "pairs_per_class": args.pairs, "n_sampled": 10, "threads": args.threads, "rows": rows,
           "timings_s": {k: round(v, 1) for k, v in timings.items()}, "load_avg": os.getloadavg()}
    print("\n| block | Euclidean % (SEM) | graph % (SEM) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} | {r['euclidean']:.1f} ({r['euclidean_sem']:.1f}) | "
              f"{r['graph']:.1f} ({r['graph_sem']:.1f}) |")
    print(json.dumps(out["timings_s"]))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--layer", type=int, default=6)
    s.add_argument("--items", type=int, default=6, help="images per class (2 classes)")
    s.add_argument("--pairs", type=int, default=6)
    s.add_argument("--batch", type=int, default=60)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--repeats", type=int, default=2)
    c = sub.add_parser("cifar")
    c.add_argument("--train", type=int, default=60, help="probe training images per class")
    c.add_argument("--test", type=int, default=20, help="measurement images per class")
    c.add_argument("--pairs", type=int, default=4, help="unordered pairs per class for Euclidean convexity")
    c.add_argument("--batch", type=int, default=60)
    c.add_argument("--C", default="cv", help="probe C, or 'cv' (5-fold CV over %s)" % (CV_GRID,))
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--out", default="")
    args = ap.parse_args(argv)
    speed(args) if args.cmd == "speed" else cifar(args)


if __name__ == "__main__":
    main()
