"""The notebook runner: parameter validation, failure reporting, paths from the repository root."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from convexlib import runner
from convexlib.runner import Notebook, RunnerError

HEADER = """\
# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---
"""


def _nb(tmp_path: Path, body: str, name: str = "01_demo") -> Notebook:
    p = tmp_path / f"{name}.py"
    p.write_text(HEADER + textwrap.dedent(body))
    return Notebook(p, runner.parameter_defaults(runner.read_notebook(p), name))


def test_parameter_cell_is_read(tmp_path):
    nb = _nb(tmp_path, '''
        # %% tags=["parameters"]
        profile = "tiny"
        seed = 3
        models = None

        # %%
        print(seed)
    ''')
    assert nb.defaults == {"profile": "tiny", "seed": 3, "models": None}


def test_parameter_cell_must_be_literal(tmp_path):
    with pytest.raises(RunnerError, match="literal"):
        _nb(tmp_path, '''
            # %% tags=["parameters"]
            seed = 1 + len("ab")
        ''')


def test_validation_errors(tmp_path):
    nbs = runner.load_notebooks()
    with pytest.raises(RunnerError, match="unknown parameter.*nonsense"):
        runner.validate_parameters(nbs, {"nonsense": 1})
    with pytest.raises(RunnerError, match="seed=.*expected int"):
        runner.validate_parameters(nbs, {"seed": "forty-two"})
    with pytest.raises(ValueError, match="unknown profile"):
        runner.validate_parameters(nbs, {"profile": "huge"})
    with pytest.raises(ValueError, match="unknown model"):
        runner.validate_parameters(nbs, {"models": ["no-such-model"]})
    with pytest.raises(ValueError, match="max_paths must be >= 1"):
        runner.validate_parameters(nbs, {"max_paths": 0})
    # values of shared and notebook-specific parameters are checked before any notebook runs
    for bad, match in [({"seed": -1}, "seed must be >= 0"), ({"pairing": "bogus"}, "pairing must be"),
                       ({"n_boot": -5}, "n_boot must be"), ({"train_sources": ["humans"]}, "train_sources"),
                       ({"lambdas": [0.1, -1.0]}, "lambdas"), ({"lambdas": []}, "lambdas"),
                       ({"num_threads": 0}, "num_threads"), ({"sources": [{}]}, "source")]:
        with pytest.raises(ValueError, match=match):
            runner.validate_parameters(nbs, bad)
    ok = runner.validate_parameters(nbs, {"profile": "tiny", "seed": 1})
    assert all(v.get("profile") == "tiny" for v in ok.values())


def test_main_reports_errors_with_exit_code(capsys):
    assert runner.main(["--profile", "huge", "--only", "01"]) == 2
    assert "unknown profile" in capsys.readouterr().err
    assert runner.main(["-p", "seed"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert runner.main(["--only", "99"]) == 2
    with pytest.raises(SystemExit):  # --only needs at least one name
        runner.main(["--only"])


def test_parse_value():
    assert runner.parse_value("[1, 2]") == [1, 2]
    assert runner.parse_value("3") == 3 and runner.parse_value("1e3") == 1000.0
    assert runner.parse_value("offline") == "offline"
    assert runner.parse_value("None") is None


def test_failing_cell_is_reported_by_name(tmp_path):
    nb = _nb(tmp_path, '''
        # %% tags=["parameters"]
        x = 1

        # %%
        raise ValueError("broken on purpose")
    ''', name="01_fails")
    with pytest.raises(RunnerError, match=r"01_fails failed in cell .*ValueError: broken on purpose"):
        runner.execute(nb, {"x": 2}, tmp_path / "out", timeout=60, progress=False)


def test_timeout_is_reported(tmp_path):
    nb = _nb(tmp_path, '''
        # %% tags=["parameters"]
        x = 1

        # %%
        import time
        time.sleep(30)
    ''', name="01_slow")
    with pytest.raises(RunnerError, match="timeout|longer than"):
        runner.execute(nb, {}, tmp_path / "out", timeout=2, progress=False)


def test_notebooks_run_from_repository_root(tmp_path):
    nb = _nb(tmp_path, '''
        # %% tags=["parameters"]
        x = 1

        # %%
        import os
        from convexlib.paths import repo_root
        assert os.getcwd() == str(repo_root()), os.getcwd()
    ''', name="01_cwd")
    runner.execute(nb, {}, tmp_path / "out", timeout=60, progress=False)
    assert (tmp_path / "out" / "01_cwd.ipynb").is_file()


def test_every_project_notebook_has_one_parameters_cell_and_header():
    paths = runner.notebook_paths()
    assert len(paths) >= 4, [p.name for p in paths]
    for p in paths:
        text = p.read_text()
        assert text.startswith("# ---\n# jupyter:") and "format_name: percent" in text
        assert text.count('tags=["parameters"]') == 1
        assert "!" not in "".join(line[:1] for line in text.splitlines() if not line.startswith("#"))
