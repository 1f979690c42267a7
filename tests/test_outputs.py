"""The outputs manifest: one entry per file, replaced by a rerun, kept by a rerun that writes nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from convexlib.outputs import MANIFEST, OutputWriter


def _files(d):
    return json.loads((d / MANIFEST).read_text())["files"]


def test_rerun_replaces_entries_and_an_empty_rerun_keeps_them(tmp_path):
    w = OutputWriter("tiny", "01_a", {"seed": 1}, out_dir=tmp_path)
    w.table(pd.DataFrame({"x": [1.0, 2.0]}), "t1")
    w.text("note", "old.md")
    assert set(_files(tmp_path)) == {"t1.csv", "t1.md", "old.md"}
    # a rerun that fails before writing (e.g. a parameter error in its first cell) leaves the manifest as it was
    OutputWriter("tiny", "01_a", {"seed": 2}, out_dir=tmp_path)
    assert set(_files(tmp_path)) == {"t1.csv", "t1.md", "old.md"}
    assert _files(tmp_path)["t1.csv"]["params"] == {"seed": 1}
    # a rerun that writes replaces all of the notebook's entries (old.md is no longer claimed)
    w3 = OutputWriter("tiny", "01_a", {"seed": 3}, out_dir=tmp_path)
    w3.table(pd.DataFrame({"x": [3.0]}), "t1")
    files = _files(tmp_path)
    assert set(files) == {"t1.csv", "t1.md"} and files["t1.csv"]["params"] == {"seed": 3}
    assert files["t1.csv"]["sha256"] != ""
    # another notebook may not take over a file
    with pytest.raises(RuntimeError, match="already written by notebook '01_a'"):
        OutputWriter("tiny", "02_b", {}, out_dir=tmp_path).table(pd.DataFrame({"x": [0.0]}), "t1")
