"""Benchmark of the metric core (issue 2). Run on demand, not in CI:

    .venv/bin/python bench/bench_convexity.py                 # everything
    .venv/bin/python bench/bench_convexity.py --skip-reference --sizes 10000 50000

Each measurement runs in a fresh process after one small untimed warm-up call of the same implementation (imports,
first process pool). Synthetic data, the same for both implementations: 768-d, class means drawn from N(0, I) scaled by ``--sep``,
points = mean + N(0, I), k = 10, up to 5,000 ordered pairs per class.

1. ours vs the reference package nnconvexity 0.1.1 at N = 500, 1,000, 2,000, 4,000 (10 classes): wall time,
   speed-up, and the largest per-class difference (ours samples other pairs than the reference, so scores
   differ by sampling noise only; exact parity is a test, tests/test_convexity.py).
2. ours alone at N = 10,000 (10 classes) and N = 50,000 (1,000 classes of 50): time and peak memory (RSS).
3. OOOA on 4.7 M random triplets over 1,854 items.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def synthetic(n: int, n_classes: int, d: int = 768, sep: float = 0.2, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, d)) * sep * np.sqrt(d) / np.sqrt(d)  # per-dimension scale
    labels = np.repeat(np.arange(n_classes), n // n_classes)
    X = means[labels] + rng.normal(size=(len(labels), d))
    return X.astype(np.float32), labels


def run_ours(n: int, n_classes: int, n_jobs: int) -> dict:
    from convexlib.convexity import graph_convexity

    X, y = synthetic(n, n_classes)
    Xw, yw = synthetic(100, 2, seed=1)  # warm-up: lazy imports and the first process pool, not timed
    graph_convexity(Xw, yw, n_neighbors=10, max_paths=50, seed=0, n_jobs=n_jobs)
    t0 = time.perf_counter()
    r = graph_convexity(X, y, n_neighbors=10, max_paths=5000, seed=42, n_jobs=n_jobs)
    dt = time.perf_counter() - t0
    return {"time": dt, "score": r.score, "classes": r.class_scores, "paths": sum(r.n_paths.values())}


def run_reference(n: int, n_classes: int) -> dict:
    from nnconvexity.graph import compute_graph_convexity

    X, y = synthetic(n, n_classes)
    Xw, yw = synthetic(100, 2, seed=1)  # warm-up, not timed (as for ours)
    compute_graph_convexity(Xw.astype(np.float64), yw, n_neighbors=10, max_n_paths=50)
    np.random.seed(42)
    t0 = time.perf_counter()
    mean, per = compute_graph_convexity(X.astype(np.float64), y, n_neighbors=10, max_n_paths=5000)
    dt = time.perf_counter() - t0
    return {"time": dt, "score": mean, "classes": {int(k): float(v) for k, v in per.items()}}


def child(args: list[str]) -> None:
    """Run one measurement in this process and print its result (peak RSS included)."""
    kind, n, c, jobs = args[0], int(args[1]), int(args[2]), int(args[3])
    out = run_ours(n, c, jobs) if kind == "ours" else run_reference(n, c)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB (ru_maxrss is KiB on Linux)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    print(json.dumps({"time": out["time"], "score": out["score"], "classes": out["classes"], "peak_gib": peak,
                      "peak_child_gib": kids, "paths": out.get("paths")}, default=float))


def measure(kind: str, n: int, c: int, jobs: int, timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--child", kind, str(n), str(c), str(jobs)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])  # the child's own JSON line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--ref-sizes", type=int, nargs="*", default=[500, 1000, 2000, 4000])
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 50_000])
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--ref-timeout", type=float, default=3600)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
    if not args.skip_reference:
        print("\n| N | classes | ours [s] | nnconvexity [s] | speed-up | max class diff [pp] |")
        print("|---|---|---|---|---|---|")
        for n in args.ref_sizes:
            ours = measure("ours", n, 10, args.jobs, 3600)
            ref = measure("ref", n, 10, 1, args.ref_timeout)
            if ref is None:
                print(f"| {n} | 10 | {ours['time']:.2f} | > {args.ref_timeout:.0f} (stopped) | > "
                      f"{args.ref_timeout / ours['time']:.0f}x | – |", flush=True)
                continue
            diff = max(abs(ours["classes"][k] - ref["classes"][k]) for k in ref["classes"])
            print(f"| {n} | 10 | {ours['time']:.2f} | {ref['time']:.1f} | {ref['time'] / ours['time']:.0f}x "
                  f"| {diff:.2f} |", flush=True)
    print("\n| N | classes | paths | time [s] | peak RSS [GiB] (main / workers) | score [%] |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        c = 10 if n <= 10_000 else n // 50
        r = measure("ours", n, c, args.jobs, 3600)
        print(f"| {n} | {c} | {r['paths']} | {r['time']:.1f} | {r['peak_gib']:.2f} / {r['peak_child_gib']:.2f} "
              f"| {r['score']:.1f} |", flush=True)

    from convexlib.alignment import odd_one_out_accuracy

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1854, 768)).astype(np.float32)
    T = np.stack([rng.choice(1854, 3, replace=False) for _ in range(1000)])
    T = T[rng.integers(0, 1000, 4_700_000)]
    odd_one_out_accuracy(X, T[:1000])
    t0 = time.perf_counter()
    r = odd_one_out_accuracy(X, T)
    print(f"\nOOOA, 4.7 M triplets over 1,854 items (768-d, centred cosine): {time.perf_counter() - t0:.2f} s "
          f"(accuracy {r.percent:.1f} %)")


if __name__ == "__main__":
    main()
