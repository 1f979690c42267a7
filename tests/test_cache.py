"""Tests for convexlib.cache: keys, atomic writes, checksums, corrupt-file handling."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from convexlib import cache as C
from convexlib.errors import CacheError


@pytest.fixture()
def arrays():
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((5, 3)).astype(np.float32),
        "idx": np.arange(7, dtype=np.int64),
        "flag": np.array([True, False]),
        "names": np.array(["bat", "baton"]),
        "scalar": np.array(2.5),
    }


def test_key_digest_is_canonical():
    a = {"model": "vit", "layers": (1, 2), "opts": {"b": 1, "a": Path("/x")}}
    b = {"opts": {"a": "/x", "b": 1}, "layers": [1, 2], "model": "vit"}
    assert C.key_digest(a) == C.key_digest(b)
    assert C.key_digest(a) == hashlib.sha256(C.canonical_json(b).encode()).hexdigest()
    assert C.canonical_json(b) == '{"layers":[1,2],"model":"vit","opts":{"a":"/x","b":1}}'
    assert C.key_digest({**b, "pooling": "cls"}) != C.key_digest({**b, "pooling": "mean_patch"})
    with pytest.raises(TypeError):
        C.key_digest({"f": object()})
    with pytest.raises(TypeError):
        C.key_digest({"f": float("nan")})


def test_entry_path_layout(tmp_path):
    key = {"a": 1}
    p = C.entry_path(key, "features/timm:vit", tmp_path)
    assert p.parent == tmp_path.resolve() / "features" / "timm_vit"
    assert p.name == C.key_digest(key)[:40] + ".npz"
    assert C.entry_path(key, "features/../x", tmp_path).parent == tmp_path.resolve() / "features" / "x"


def test_entry_path_uses_env_cache(tmp_cache):
    assert C.entry_path({"a": 1}, "t").parent == tmp_cache.resolve() / "t"


def test_array_checksum_by_hand():
    a = np.array([[1, 2], [3, 4]], dtype="<i4")
    h = hashlib.sha256(b"<i4" + b"(2, 2)" + a.tobytes()).hexdigest()
    assert C.array_checksum(a) == h
    assert C.array_checksum(a.T) == C.array_checksum(np.ascontiguousarray(a.T))
    assert C.array_checksum(a.T) != h
    assert C.array_checksum(a.astype("<i8")) != h


def test_roundtrip(tmp_path, arrays):
    path = tmp_path / "sub" / "e.npz"
    meta = {"key": {"k": 1}, "note": "hello", "nested": {"t": (1, 2)}}
    assert C.save_arrays(path, arrays, meta) == path
    got, got_meta = C.load_arrays(path)
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype
    assert got_meta == {"key": {"k": 1}, "note": "hello", "nested": {"t": [1, 2]}}
    sub, _ = C.load_arrays(path, ["idx"], expect_key={"k": 1})
    assert list(sub) == ["idx"]
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left behind


def test_missing_file_is_a_plain_miss(tmp_path):
    with pytest.raises(FileNotFoundError):
        C.load_arrays(tmp_path / "absent.npz")


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError):
        C.save_arrays(tmp_path / "a.npz", {})
    with pytest.raises(ValueError):
        C.save_arrays(tmp_path / "a.npz", {"o": np.array([{}, 1], dtype=object)})
    with pytest.raises(ValueError):
        C.save_arrays(tmp_path / "a.npz", {"__meta__": np.zeros(1)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_file_detected(tmp_path, arrays, cut):
    path = C.save_arrays(tmp_path / "e.npz", arrays, {"key": {}})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CacheError, match="corrupt|cannot be read|no __meta__"):
        C.load_arrays(path)


def test_flipped_byte_detected_by_checksum(tmp_path):
    x = np.arange(1000, dtype=np.float64)
    path = C.save_arrays(tmp_path / "e.npz", {"x": x})
    data = bytearray(path.read_bytes())
    pos = data.find(x[500:502].tobytes())
    assert pos > 0
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="corrupt"):  # zip CRC or our checksum, whichever looks first
        C.load_arrays(path)


def test_checksum_catches_a_consistent_zip_with_other_numbers(tmp_path):
    x = np.arange(10, dtype=np.float32)
    path = C.save_arrays(tmp_path / "e.npz", {"x": x})
    with np.load(path) as npz:
        header = npz["__meta__"]
    y = x.copy()
    y[3] += 1e-3
    with open(path, "wb") as fh:  # a well-formed npz whose array differs from the recorded checksum
        np.savez(fh, __meta__=header, x=y)
    with pytest.raises(CacheError, match="checksum mismatch"):
        C.load_arrays(path)


def test_garbage_and_foreign_npz(tmp_path):
    g = tmp_path / "g.npz"
    g.write_bytes(b"not a zip file at all")
    with pytest.raises(CacheError):
        C.load_arrays(g)
    f = tmp_path / "f.npz"
    np.savez(f, x=np.zeros(3))
    with pytest.raises(CacheError, match="__meta__"):
        C.load_arrays(f)


def test_wrong_key_and_missing_name(tmp_path, arrays):
    path = C.save_arrays(tmp_path / "e.npz", arrays, {"key": {"pooling": "cls"}})
    with pytest.raises(CacheError, match="another key"):
        C.load_arrays(path, expect_key={"pooling": "mean_patch"})
    with pytest.raises(CacheError, match="no array"):
        C.load_arrays(path, ["nope"])


def test_failed_write_keeps_old_entry(tmp_path, monkeypatch):
    path = C.save_arrays(tmp_path / "e.npz", {"x": np.ones(3)})

    def boom(fh, **kw):
        fh.write(b"PK partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(C.np, "savez", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        C.save_arrays(path, {"x": np.zeros(3)})
    monkeypatch.undo()
    got, _ = C.load_arrays(path)
    np.testing.assert_array_equal(got["x"], np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]


def test_cached_arrays_hit_miss_and_corrupt(tmp_path, caplog):
    calls = []

    def compute():
        calls.append(1)
        return {"y": np.full(4, float(len(calls)))}, {"extra": "m"}

    key = {"what": "demo", "n": 4}
    first = C.cached_arrays(key, "demo", compute, cache_dir=tmp_path)
    second = C.cached_arrays(key, "demo", compute, cache_dir=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["y"], second["y"])
    path = C.entry_path(key, "demo", tmp_path)
    _, meta = C.load_arrays(path)
    assert meta == {"extra": "m", "key": key}
    # another key is a miss
    C.cached_arrays({**key, "n": 5}, "demo", compute, cache_dir=tmp_path)
    assert len(calls) == 2
    # corrupt entry: recomputed (value 3 now) with a warning, then a hit again
    path.write_bytes(path.read_bytes()[:50])
    with caplog.at_level(logging.WARNING, logger="convexlib.cache"):
        third = C.cached_arrays(key, "demo", compute, cache_dir=tmp_path)
    assert len(calls) == 3 and third["y"][0] == 3.0
    assert "recomputing" in caplog.text
    C.cached_arrays(key, "demo", compute, cache_dir=tmp_path)
    assert len(calls) == 3
    path.write_bytes(b"junk")
    with pytest.raises(CacheError):
        C.cached_arrays(key, "demo", compute, cache_dir=tmp_path, on_corrupt="raise")


def test_meta_is_json_inside(tmp_path):
    path = C.save_arrays(tmp_path / "e.npz", {"x": np.zeros(2)}, {"key": {"a": 1}})
    with np.load(path) as npz:
        header = json.loads(bytes(npz["__meta__"]).decode())
    assert header["format"] == C.FORMAT_VERSION
    assert header["checksums"]["x"] == C.array_checksum(np.zeros(2))
