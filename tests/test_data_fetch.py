"""Checksummed fetch without the network: a file:// mirror of the real data root, hash mismatches, an
unreachable loopback port, trust-on-first-use hashes, the kriegeskorte92 derivation and the command line."""

from __future__ import annotations

import filecmp
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from convexlib.data import REGISTRY, FetchError, RemoteFile, derive_kriegeskorte92, fetch, verify
from convexlib.data.__main__ import main as cli


def _closed_port_url(name: str = "file.tsv") -> str:
    """An http URL on the loopback interface where nothing listens: connection refused, no network involved."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*")] if folder.exists() else []


def test_registry_pins_every_shared_file(data_root):
    for entry in REGISTRY:
        assert entry.path.count("..") == 0 and not entry.path.startswith("/")
        if entry.sha256 is not None:
            assert len(entry.sha256) == 64
            assert (data_root / entry.path).is_file(), entry.path
        assert entry.url.startswith("https://")
    assert all(s == "ok" for p, s in verify(data_root).items() if not p.startswith("things-triplets/"))


def test_fetch_from_file_mirror_verifies_hashes(data_root, tmp_path):
    root = tmp_path / "root"
    lines: list[str] = []
    files = fetch(root, groups=["things", "vice"], mirror=data_root.as_uri(), progress=False, log=lines.append)
    assert len(files) == 6
    for f in files:
        assert filecmp.cmp(f, data_root / f.relative_to(root), shallow=False)
    assert all(line.startswith("fetched") for line in lines)
    lines.clear()
    fetch(root, groups=["vice"], mirror="file:///nonexistent", progress=False, log=lines.append)
    assert all(line.startswith("present") for line in lines)  # already there: no copy attempted
    status = verify(root)
    assert status["vice/test_triplets.csv"] == "ok" and status["things-data/animacy.csv"] == "missing"


def test_hash_mismatch_keeps_nothing(data_root, tmp_path):
    src = data_root / "vice/sortindex.txt"
    entry = RemoteFile("vice/sortindex.txt", src.as_uri(), "0" * 64, "test")
    root = tmp_path / "root"
    with pytest.raises(FetchError, match="does not have the expected sha256"):
        fetch(root, registry=[entry], progress=False, log=None)
    assert _leftovers(root) == [] and not root.exists()
    # into an existing folder: still nothing left, not even pooch's temporary file
    (root / "vice").mkdir(parents=True)
    with pytest.raises(FetchError):
        fetch(root, registry=[entry], progress=False, log=None)
    assert _leftovers(root / "vice") == []


def test_unreachable_host_fails_fast_and_clean(tmp_path):
    entry = RemoteFile("vice/test_triplets.csv", _closed_port_url(), "0" * 64, "test")
    root = tmp_path / "new" / "root"
    start = time.perf_counter()
    with pytest.raises(FetchError, match="could not be reached") as info:
        fetch(root, registry=[entry], timeout=3, progress=False, log=None)
    assert time.perf_counter() - start < 10
    assert "offline" in str(info.value) and "Nothing partial was written" in str(info.value)
    assert not (tmp_path / "new").exists()  # the folders created for the download are gone again


def test_first_download_hash_is_recorded_and_enforced(tmp_path):
    src = tmp_path / "source.csv"
    src.write_text("a,b\n1,2\n")
    entry = RemoteFile("things-triplets/triplets.csv", src.as_uri(), None, "test")
    root = tmp_path / "root"
    fetch(root, registry=[entry], progress=False, log=None)
    recorded = json.loads((root / "fetch-hashes.json").read_text())
    import hashlib

    assert recorded == {"things-triplets/triplets.csv": hashlib.sha256(src.read_bytes()).hexdigest()}
    assert verify(root, registry=[entry]) == {"things-triplets/triplets.csv": "ok"}
    # the source changes afterwards: a new download no longer matches the recorded hash
    (root / "things-triplets/triplets.csv").unlink()
    src.write_text("a,b\n1,3\n")
    with pytest.raises(FetchError, match="recorded at first download"):
        fetch(root, registry=[entry], progress=False, log=None)
    assert not (root / "things-triplets/triplets.csv").exists()


def test_derive_kriegeskorte92_reproduces_shared_folder(data_root, tmp_path):
    folder = tmp_path / "kriegeskorte92"
    folder.mkdir()
    for name in ("Kriegeskorte_Neuron2008_supplementalData.mat", "92_behavRDMs.mat"):
        (folder / name).symlink_to(data_root / "kriegeskorte92" / name)
    written = derive_kriegeskorte92(tmp_path)
    assert len(written) == 96
    shared = data_root / "kriegeskorte92"
    for name in ("stimuli.tsv", "rdm_hIT.npy", "rdm_mIT.npy", "rdms_behav_simjudge.npy"):
        assert filecmp.cmp(folder / name, shared / name, shallow=False), name
    from PIL import Image

    for i in (0, 45, 91):
        a = np.asarray(Image.open(folder / f"images/{i:02d}.png"))
        assert np.array_equal(a, np.asarray(Image.open(shared / f"images/{i:02d}.png")))


def test_cli(data_root, tmp_path, capsys):
    assert cli(["verify", "--root", str(data_root)]) == 0
    assert "ok        vice/test_triplets.csv" in capsys.readouterr().out
    rc = cli(["fetch", "--root", str(tmp_path / "r"), "--only", "vice", "--mirror", _closed_port_url("base"),
              "--timeout", "3", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "could not be reached" in err
    assert not (tmp_path / "r").exists()
    assert cli(["images"]) == 0 and "osf.io/jum2f" in capsys.readouterr().out
