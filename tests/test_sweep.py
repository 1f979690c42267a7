"""Sweeps on Dask (issue 10): the unit grid, sequential runs vs the notebooks' layerwise, resume after an
interruption, and a 2-worker LocalCluster (equal results, a worker killed mid-sweep, resume, one model per
worker at a time).

All on the ``tiny`` profile with ``max_paths=20`` and a fresh cache; needs the real data root (skipped without).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from convexlib import experiments as E
from convexlib import profiles
from convexlib import sweep as S

MODELS = ["tiny-vit", "tiny-beit"]
SEEDS = [42, 43]


def _cfg(data_root, cache, **kw):
    return profiles.resolve("tiny", data_root=str(data_root), cache_dir=str(cache), **{"max_paths": 20, **kw})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("sweep_cache")


@pytest.fixture(scope="module")
def spec(data_root, cache):
    return S.make_spec(_cfg(data_root, cache), models=MODELS, seeds=SEEDS, variants=["euclidean"])


@pytest.fixture(scope="module")
def sequential(spec, tmp_path_factory):
    """The reference: the whole grid run sequentially in this process."""
    return S.run_sweep(spec, tmp_path_factory.mktemp("seq") / "sweep", progress=False)


# ------------------------------------------------------------------------------------------------------------
# the grid (no computation)
# ------------------------------------------------------------------------------------------------------------


def test_parse_variant():
    assert S.parse_variant("euclidean") == ("euclidean", "cosine")  # the paper's pair
    assert S.parse_variant("cosine") == ("cosine", "euclidean")  # App. A.3
    assert S.parse_variant("cosine:cosine") == ("cosine", "cosine")
    for bad in ("manhattan", "cosine:l1", "l1:cosine", ""):
        with pytest.raises(ValueError):
            S.parse_variant(bad)


def test_make_spec_validates(data_root, cache):
    cfg = _cfg(data_root, cache)
    s = S.make_spec(cfg)
    assert s.models == tuple(cfg.models) and s.seeds == (42, 43)  # tiny: n_seeds = 2 from seed 42
    with pytest.raises(ValueError, match="duplicates"):
        S.make_spec(cfg, seeds=[1, 1])
    with pytest.raises(ValueError, match="unknown variant"):
        S.make_spec(cfg, variants=["manhattan"])
    with pytest.raises(ValueError, match="layers"):
        S.make_spec(cfg, layers=[0])
    with pytest.raises(ValueError, match="exceed"):
        S.plan_sweep(S.make_spec(cfg, models=["tiny-vit"], layers=[5]))  # tiny models have 4 blocks
    with pytest.raises(ValueError, match="unknown data set"):
        S.plan_sweep(S.make_spec(cfg, models=["tiny-vit"], datasets=["imagenet-things"]))


def test_unit_ids_are_file_safe_and_distinct():
    a = S.Unit("metrics", "timm:vit_base", "cifar10", 42, 3, "euclidean", "convexity")
    b = S.Unit("metrics", "timm_vit_base", "cifar10", 42, 3, "euclidean", "convexity")
    assert a.uid != b.uid and "/" not in a.uid and ":" not in a.uid
    assert b.uid == "metrics--timm_vit_base--cifar10--L003--euclidean--s42" and b.filename == b.uid + ".csv"
    assert S.Unit("features", "m", "d", 7).filename == "features--m--d--s7.json"


def test_results_csv_round_trips_exactly(tmp_path):
    values = [0.1 + 0.2, 1e-300, float("nan"), 2 / 3, 100.0, -0.0]
    df = pd.DataFrame({
        "profile": "tiny", "model": "m", "label": ["", "NA", "a,b", 'q"t', "nan", "x"], "family": "f",
        "variant": "pretrained", "group": "pretrained", "size": "tiny", "n_layers": 4, "layer": [1, 2, 3, 4, 1, 2],
        "depth": [0.0, 1 / 3, 2 / 3, 1.0, 0.0, 1 / 3], "dataset": "d", "metric": "convexity", "value": values,
        "seed": 42, "metric_variant": "euclidean"}, columns=S.SWEEP_COLUMNS)
    path = tmp_path / "results.csv"
    path.write_text(S._to_csv_text(df))
    back = S.load_results(path)
    pd.testing.assert_frame_equal(back, df, check_exact=True)  # NaN stays NaN, "" and "NA" stay strings
    assert [v.hex() for v in back["value"]] == [v.hex() for v in values]  # bit for bit (incl. -0.0)


def test_plan_shares_seed_independent_units(data_root, cache):
    spec = S.make_spec(_cfg(data_root, cache), models=["tiny-vit"], seeds=[42, 43], variants=["euclidean", "cosine"])
    plan = S.plan_sweep(spec)
    # CIFAR-10 draws differ by seed; the Kriegeskorte-92 images do not: 3 feature units, not 4
    assert sorted(u.uid for u in plan.features) == sorted([
        "features--tiny-vit--cifar10-test-12--s42", "features--tiny-vit--cifar10-test-12--s43",
        "features--tiny-vit--kriegeskorte92-category--s42"])
    conv = [u for u in plan.metrics if u.metric == "convexity"]
    oooa = [u for u in plan.metrics if u.metric == "oooa"]
    assert len(conv) == 4 * 2 * 2  # layers x seeds x distances
    assert len(oooa) == 4 * 2  # layers x similarities: OOOA has no randomness, one unit serves both seeds
    assert {u.distance for u in oooa} == {"cosine", "euclidean"}
    # rows: per variant, seed, layer: 3 convexity metrics + 1 OOOA
    assert len(plan.slots) == 2 * 2 * 4 * 4
    assert [s.variant for s in plan.slots[:16]] == ["euclidean"] * 16
    assert all(plan.depends[u.uid] in {f.uid for f in plan.features} for u in plan.metrics)


# ------------------------------------------------------------------------------------------------------------
# sequential runs
# ------------------------------------------------------------------------------------------------------------


def test_sequential_equals_notebook_layerwise(sequential, spec):
    res = sequential
    assert res.mode == "sequential" and len(res.computed) == res.n_units and not res.skipped
    assert list(res.tidy.columns) == S.SWEEP_COLUMNS
    for seed in SEEDS:
        nb = S.results_for_notebook(res.sweep_dir, seed=seed, profile="tiny")
        lw = E.layerwise(spec.cfg, MODELS, seed=seed, progress=False)
        pd.testing.assert_frame_equal(nb, lw, check_exact=True)  # same rows, order, dtypes and bits
    # the CSV round-trips exactly
    pd.testing.assert_frame_equal(S.load_results(res.results_path), res.tidy, check_exact=True)
    with pytest.raises(ValueError, match="not in the sweep"):
        S.results_for_notebook(res.sweep_dir, seed=7)
    with pytest.raises(ValueError, match="cosine"):
        S.results_for_notebook(res.sweep_dir, metric_variant="cosine")


def test_interrupted_sweep_resumes_without_redoing(sequential, data_root, cache, tmp_path):
    spec = S.make_spec(_cfg(data_root, cache), models=["tiny-vit"], seeds=[43], layers=[1, 2])
    out = tmp_path / "sweep"

    def stop_after_3(unit, n_done, n_todo):
        if n_done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        S.run_sweep(spec, out, progress=False, on_unit_done=stop_after_3)
    assert not (out / S.RESULTS_FILE).exists()
    with pytest.raises(FileNotFoundError, match="resume"):
        S.results_for_notebook(out)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "units").iterdir() if not p.name.startswith(".")}
    assert len(first) == 3
    res = S.run_sweep(spec, out, progress=False)
    assert len(res.skipped) == 3 and len(res.computed) == res.n_units - 3 == 3
    assert {u + (".json" if u.startswith("features") else ".csv") for u in res.skipped} == set(first)
    assert all((out / "units" / n).stat().st_mtime_ns == t for n, t in first.items())  # untouched
    ref = sequential.tidy
    ref = ref[(ref.model == "tiny-vit") & (ref.seed == 43) & ref.layer.isin([1, 2])].reset_index(drop=True)
    pd.testing.assert_frame_equal(res.tidy, ref, check_exact=True)
    # a finished sweep reruns nothing; other metric parameters are refused
    again = S.run_sweep(spec, out, progress=False)
    assert again.computed == [] and again.results_path.read_bytes() == res.results_path.read_bytes()
    other = S.make_spec(_cfg(data_root, cache, max_paths=21), models=["tiny-vit"], seeds=[43], layers=[1, 2])
    with pytest.raises(ValueError, match="max_paths"):
        S.run_sweep(other, out, progress=False)


def test_cli_resumes_a_finished_sweep(sequential, data_root, cache, tmp_path, capsys):
    out = tmp_path / "cli"
    shutil.copytree(sequential.sweep_dir, out)
    (out / S.RESULTS_FILE).unlink()
    argv = ["--profile", "tiny", "--models", *MODELS, "--seeds", *map(str, SEEDS), "--variants", "euclidean",
            "--out", str(out), "--data-root", str(data_root), "--cache-dir", str(cache), "-p", "max_paths=20",
            "--no-progress"]
    assert S.main(argv) == 0
    assert (out / S.RESULTS_FILE).read_bytes() == sequential.results_path.read_bytes()
    assert S.main(argv[:-1] + ["-p", "bogus=1"]) == 2
    assert "not a profile parameter" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# on a LocalCluster
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_client():
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       resources={S.MODEL_RESOURCE: 1}, dashboard_address="127.0.0.1:0")
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_cluster_equals_sequential_with_a_worker_killed(sequential, spec, cluster_client, tmp_path):
    client = cluster_client
    killed: dict[str, int] = {}

    def kill_one_worker(unit, n_done, n_todo):
        if n_done == 5 and not killed:
            busy = [w for w, keys in client.processing().items() if keys] or list(client.processing())
            target = busy[0]
            killed[target] = client.run(os.getpid, workers=[target])[target]
            os.kill(killed[target], signal.SIGKILL)  # mid-task: the worker has a unit in progress

    out = tmp_path / "cluster"
    res = S.run_sweep(spec, out, client=client, progress=False, on_unit_done=kill_one_worker)
    assert killed, "no worker was killed"
    assert res.mode == "scheduler" and len(res.computed) == res.n_units
    pd.testing.assert_frame_equal(res.tidy, sequential.tidy, check_exact=True)
    assert res.results_path.read_bytes() == sequential.results_path.read_bytes()
    # the killed worker process is gone; its nanny started a fresh one
    deadline = time.time() + 60
    while len(client.scheduler_info()["workers"]) < 2 and time.time() < deadline:
        time.sleep(0.5)
    assert list(killed.values())[0] not in client.run(os.getpid).values()


def test_cluster_resume_computes_only_missing_units(sequential, spec, tmp_path):
    out = tmp_path / "resume"
    shutil.copytree(sequential.sweep_dir, out)
    units = out / "units"
    plan = S.plan_sweep(spec)
    gone_metrics = [u for u in plan.metrics if u.model == "tiny-beit" and u.seed == 43 and u.layer in (2, 3)]
    needed = {plan.depends[u.uid] for u in gone_metrics}
    unneeded = next(u for u in plan.features if u.uid not in needed)
    needed_f = next(u for u in plan.features if u.uid in needed)
    for u in gone_metrics + [unneeded, needed_f]:
        (units / u.filename).unlink()
    res = S.run_sweep(spec, out, workers=2, progress=False)  # a LocalCluster of its own
    assert res.mode == "local-cluster"
    # the missing metrics and the one features unit they need; not the features unit nobody needs
    assert sorted(res.computed) == sorted([u.uid for u in gone_metrics] + [needed_f.uid])
    assert not (units / unneeded.filename).exists()
    assert res.results_path.read_bytes() == sequential.results_path.read_bytes()


def test_one_model_per_worker_at_a_time(data_root, tmp_path):
    """Two threads on one worker: without the MODEL resource the two extractions would overlap."""
    distributed = pytest.importorskip("dask.distributed")
    spec = S.make_spec(_cfg(data_root, tmp_path / "fresh_cache"), models=["tiny-vit"], seeds=[42, 43], layers=[1])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, resources={"MODEL": 1},
                                  dashboard_address="127.0.0.1:0") as cluster, distributed.Client(cluster) as client:
        res = S.run_sweep(spec, tmp_path / "sweep", client=client, progress=False)
    markers = [json.loads(p.read_text()) for p in (tmp_path / "sweep" / "units").glob("features--*.json")]
    assert len(markers) == 3 and len(res.computed) == res.n_units
    spans = sorted((m["started"], m["finished"]) for m in markers)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    # features were really extracted (a fresh cache), and workers without the resource are refused
    assert all(Path(m["path"]).is_file() for m in markers)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address="127.0.0.1:0") as c2, distributed.Client(c2) as client2:
        with pytest.raises(ValueError, match="MODEL=1"):
            S.run_sweep(spec, tmp_path / "sweep2", client=client2, progress=False)
