"""Benchmark: overhead of ``convexlib.features.extract`` over the bare model forward on the same batches.

For each case, three timings over identical batches (minimum of ``--repeats`` runs, after one warm-up batch):

forward   the bare forward ``module(..., output_hidden_states=True)`` on inputs prepared beforehand
loop      a plain user loop: prepare each batch (tokenise / open + preprocess images), then the bare forward
extract   ``extract(model, data, cache=False, progress=False)``: all layers, pooled, copied to NumPy

and the overhead of ``extract`` relative to both. The issue's target is <= 10 % over the bare forward for the
extraction machinery; for image sets, decoding JPEGs is work any pipeline does, so ``loop`` is the fair baseline
there (``extract`` overlaps it with the forward in loader threads).

Usage::

    python bench/bench_extraction.py                  # MiniLM on 1,854 THINGS texts, DINOv2-S and tiny-ViT on images
    python bench/bench_extraction.py --cases minilm --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexlib import features as F  # noqa: E402
from convexlib import models as M  # noqa: E402
from convexlib.data.sets import ImageSet, TextSet  # noqa: E402
from convexlib.paths import data_root  # noqa: E402


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def _prepare(lm: M.LoadedModel, data, batch_size: int) -> list:
    if isinstance(data, TextSet):
        return [lm.make_batch(data.texts[s:s + batch_size]) for s in range(0, len(data), batch_size)]
    return [_load_images(lm, data.paths[s:s + batch_size]) for s in range(0, len(data), batch_size)]


def _load_images(lm: M.LoadedModel, paths) -> torch.Tensor:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as img:
            out.append(lm.preprocess(img.convert("RGB")))
    return torch.stack(out)


def _forward(lm: M.LoadedModel, batch) -> None:
    batch = M._to_device(batch, lm.device)
    if isinstance(batch, torch.Tensor):
        lm.module(pixel_values=batch, output_hidden_states=True)
    else:
        lm.module(**batch, output_hidden_states=True)


def bench_case(name: str, lm: M.LoadedModel, data, batch_size: int, repeats: int) -> dict:
    batches = _prepare(lm, data, batch_size)
    with torch.inference_mode():
        _forward(lm, batches[0])  # warm-up

        def bare() -> None:
            for b in batches:
                _forward(lm, b)

        def loop() -> None:
            if isinstance(data, TextSet):
                for s in range(0, len(data), batch_size):
                    _forward(lm, lm.make_batch(data.texts[s:s + batch_size]))
            else:
                for s in range(0, len(data), batch_size):
                    _forward(lm, _load_images(lm, data.paths[s:s + batch_size]))

    def run_extract() -> None:
        F.extract(lm, data, cache=False, progress=False, batch_size=batch_size)

    t_bare, t_loop, t_ext = [], [], []
    for _ in range(repeats):  # interleaved, so drifting machine load hits all three alike
        with torch.inference_mode():
            t_bare.append(_timed(bare))
            t_loop.append(_timed(loop))
        t_ext.append(_timed(run_extract))
    row = {"case": name, "n": len(data), "batch": batch_size, "layers": lm.n_layers, "device": str(lm.device)}
    for j, kind in enumerate(("wall", "cpu")):
        fb, lp, ex = (min(t[j] for t in ts) for ts in (t_bare, t_loop, t_ext))
        row.update({f"{kind}_forward": fb, f"{kind}_loop": lp, f"{kind}_extract": ex,
                    f"{kind}_vs_forward": 100 * (ex / fb - 1), f"{kind}_vs_loop": 100 * (ex / lp - 1)})
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=["minilm", "dinov2", "tiny-vit"],
                    choices=["minilm", "dinov2", "tiny-vit"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-images", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 gives stable timings)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = data_root(must_exist=False)
    rows = []

    if "minilm" in args.cases:
        import pandas as pd

        concepts = pd.read_csv(root / "thingsvision" / "things_concepts.tsv", sep="\t")
        texts = F.things_texts(concepts)  # "{Word}: {definition}", 1,854 texts
        rows.append(bench_case("minilm / THINGS word: definition", M.load_model("minilm", args.device), texts, 64,
                               args.repeats))

    image_dir = root / "imagenet-sample" / "images"
    images = ImageSet(tuple(sorted(image_dir.glob("*.jpg"))[: args.n_images])) if image_dir.is_dir() else None
    if images is None and {"dinov2", "tiny-vit"} & set(args.cases):
        print(f"no images under {image_dir}; skipping image cases", file=sys.stderr)
    if images is not None and "dinov2" in args.cases:
        try:
            lm = M.load_model("dinov2-s-imgfocus", args.device)
        except Exception as exc:  # the offline DINOv2 is optional
            print(f"skipping dinov2-s-imgfocus: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            rows.append(bench_case("dinov2-s-imgfocus / ImageNet photos", lm, images, 32, args.repeats))
    if images is not None and "tiny-vit" in args.cases:
        rows.append(bench_case("tiny-vit / ImageNet photos", M.load_model("tiny-vit", args.device), images, 32,
                               args.repeats))

    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}, device={args.device}, "
          f"best of {args.repeats}; wall = elapsed seconds, cpu = CPU seconds of this process (robust to other load)")
    header = f"{'case':38s} {'n':>5s} {'L':>3s} {'time':>5s} {'forward s':>10s} {'loop s':>8s} " \
             f"{'extract s':>10s} {'vs forward':>11s} {'vs loop':>8s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        for kind in ("wall", "cpu"):
            print(f"{r['case'] if kind == 'wall' else '':38s} {r['n']:5d} {r['layers']:3d} {kind:>5s} "
                  f"{r[kind + '_forward']:10.3f} {r[kind + '_loop']:8.3f} {r[kind + '_extract']:10.3f} "
                  f"{r[kind + '_vs_forward']:+10.1f}% {r[kind + '_vs_loop']:+7.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
