"""vitrain's model against independent references: timm's VisionTransformer and Python's safetensors.

Driven through the `vit-model-tool` test helper (tests/model/model_tool.cpp), whose path comes in
the VIT_MODEL_TOOL environment variable (CTest sets it). Everything runs fp32 on CPU. timm and
safetensors are required: a missing package fails the run, it does not skip.
"""
import os
import subprocess
from pathlib import Path

import pytest
import timm  # noqa: F401  (fail loudly at import when timm is missing)
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

TOOL = os.environ.get("VIT_MODEL_TOOL", "")
ATOL = 1e-5

# Small models: square, non-square (24x40 px, grid 6x10), and the paper's pretraining MLP head.
SHAPES = {
    "square": dict(image_size=32, patch_size=4, width=64, depth=2, num_heads=4, mlp_dim=128, num_classes=10),
    "nonsquare": dict(image_height=24, image_width=40, patch_size=4, width=48, depth=2, num_heads=3, mlp_dim=96,
                      num_classes=7),
}


@pytest.fixture(scope="session")
def tool():
    assert TOOL and Path(TOOL).is_file(), "set VIT_MODEL_TOOL to the vit-model-tool executable (ctest does)"
    return TOOL


def run(tool, *args):
    result = subprocess.run([tool, *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, f"vit-model-tool {' '.join(map(str, args))} failed:\n{result.stderr}"
    return result.stdout


def shape_arg(shape, head):
    return ",".join(f"{k}={v}" for k, v in {**shape, "head": head}.items())


def image_hw(shape):
    return shape.get("image_height", shape.get("image_size")), shape.get("image_width", shape.get("image_size"))


def timm_vit(shape):
    """timm's VisionTransformer with the vitrain shape, linear head, LayerNorm eps 1e-6 (timm's default)."""
    return VisionTransformer(img_size=image_hw(shape), patch_size=shape["patch_size"], embed_dim=shape["width"],
                             depth=shape["depth"], num_heads=shape["num_heads"],
                             mlp_ratio=shape["mlp_dim"] / shape["width"], num_classes=shape["num_classes"],
                             class_token=True, global_pool="token", qkv_bias=True).eval()


def random_input(shape, path, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *image_hw(shape), generator=g)
    save_file({"x": x}, str(path))
    return x


# ---- vitrain -> timm ----

@pytest.mark.parametrize("name", SHAPES)
def test_vitrain_weights_load_into_timm_strictly_and_give_same_logits(tool, tmp_path, name):
    shape = SHAPES[name]
    weights, inp, out = tmp_path / "w.safetensors", tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    # Jitter: biases, LayerNorms and the zero head get random values too, so no name can hide.
    run(tool, "init", "--shape", shape_arg(shape, "linear"), "--seed", 7, "--jitter", 0.05, "--out", weights)
    x = random_input(shape, inp)
    run(tool, "forward", "--shape", shape_arg(shape, "linear"), "--weights", weights, "--input", inp, "--out", out)
    ours = load_file(str(out))

    model = timm_vit(shape)
    model.load_state_dict(load_file(str(weights)), strict=True)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    assert logits.abs().max() > 0.1  # not a trivially zero head
    torch.testing.assert_close(ours["features"], features, rtol=0, atol=ATOL)
    torch.testing.assert_close(ours["logits"], logits, rtol=0, atol=ATOL)


def test_vitrain_fresh_linear_head_inits_and_loads_into_timm(tool, tmp_path):
    # From scratch: timm's head init (trunc normal 0.02, zero bias); head_init=zero: the
    # fine-tuning head. Both load strictly into timm.
    shape = SHAPES["square"]
    for head_init in ("auto", "zero"):
        weights = tmp_path / f"w_{head_init}.safetensors"
        run(tool, "init", "--shape", shape_arg(shape, "linear") + f",head_init={head_init}", "--seed", 3,
            "--out", weights)
        state = load_file(str(weights))
        assert torch.count_nonzero(state["head.bias"]) == 0
        if head_init == "zero":
            assert torch.count_nonzero(state["head.weight"]) == 0
        else:
            w = state["head.weight"]
            assert w.abs().max() <= 2.0 and 0.01 < float(w.std()) < 0.03  # trunc normal 0.02 (few samples)
        timm_vit(shape).load_state_dict(state, strict=True)


def test_vitrain_mlp_head_matches_tanh_pre_logits_on_timm_features(tool, tmp_path):
    # timm's modern VisionTransformer has no pre_logits.fc: load the rest strictly into timm and
    # apply the paper's head by hand: head(tanh(pre_logits.fc(cls))).
    shape = SHAPES["square"]
    weights, inp, out = tmp_path / "w.safetensors", tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    run(tool, "init", "--shape", shape_arg(shape, "mlp"), "--seed", 11, "--jitter", 0.05, "--out", weights)
    x = random_input(shape, inp)
    run(tool, "forward", "--shape", shape_arg(shape, "mlp"), "--weights", weights, "--input", inp, "--out", out)
    ours = load_file(str(out))

    state = load_file(str(weights))
    fc_w, fc_b = state.pop("pre_logits.fc.weight"), state.pop("pre_logits.fc.bias")
    assert fc_w.shape == (shape["width"], shape["width"])
    model = timm_vit(shape)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        cls = model.forward_features(x)[:, 0]
        logits = torch.nn.functional.linear(torch.tanh(torch.nn.functional.linear(cls, fc_w, fc_b)),
                                            state["head.weight"], state["head.bias"])
    torch.testing.assert_close(ours["logits"], logits, rtol=0, atol=ATOL)


# ---- timm -> vitrain ----

@pytest.mark.parametrize("name", SHAPES)
def test_timm_weights_load_into_vitrain_strictly_and_give_same_logits(tool, tmp_path, name):
    shape = SHAPES[name]
    weights, inp, out = tmp_path / "w.safetensors", tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    torch.manual_seed(5)
    model = timm_vit(shape)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    x = random_input(shape, inp, seed=1)
    run(tool, "forward", "--shape", shape_arg(shape, "linear"), "--weights", weights, "--input", inp, "--out", out)
    ours = load_file(str(out))
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.forward_head(features)
    torch.testing.assert_close(ours["features"], features, rtol=0, atol=ATOL)
    torch.testing.assert_close(ours["logits"], logits, rtol=0, atol=ATOL)


def test_strict_load_rejects_a_missing_and_an_extra_name(tool, tmp_path):
    shape = SHAPES["square"]
    state = {k: v.contiguous() for k, v in timm_vit(shape).state_dict().items()}
    state["blocks.0.attn.qkv.wieght"] = state.pop("blocks.0.attn.qkv.weight")
    weights, inp = tmp_path / "w.safetensors", tmp_path / "x.safetensors"
    save_file(state, str(weights))
    random_input(shape, inp)
    result = subprocess.run([tool, "forward", "--shape", shape_arg(shape, "linear"), "--weights", weights,
                             "--input", inp, "--out", tmp_path / "y.safetensors"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "missing blocks.0.attn.qkv.weight" in result.stderr
    assert "unexpected blocks.0.attn.qkv.wieght" in result.stderr


# ---- position-embedding resampling vs timm.layers.resample_abs_pos_embed ----

@pytest.mark.parametrize("old,new,mode", [
    ((8, 8), (12, 12), "bicubic"),
    ((14, 14), (24, 24), "bicubic"),
    ((12, 12), (8, 8), "bicubic"),   # downsampling: antialiasing matters here
    ((7, 7), (10, 14), "bicubic"),   # non-square target
    ((12, 12), (8, 8), "bilinear"),  # upsampling bilinear is the same with or without antialias
])
def test_resample_matches_timm(tool, tmp_path, old, new, mode):
    g = torch.Generator().manual_seed(old[0] * 100 + new[1])
    pos_embed = torch.randn(1, 1 + old[0] * old[1], 32, generator=g)  # unit scale: atol is strict
    src, dst = tmp_path / "p.safetensors", tmp_path / "q.safetensors"
    save_file({"pos_embed": pos_embed}, str(src))
    run(tool, "resample", "--in", src, "--old", f"{old[0]}x{old[1]}", "--new", f"{new[0]}x{new[1]}",
        "--mode", mode, "--out", dst)
    ours = load_file(str(dst))["pos_embed"]
    expected = resample_abs_pos_embed(pos_embed, new_size=list(new), old_size=list(old), num_prefix_tokens=1,
                                      interpolation=mode, antialias=True)
    assert ours.shape == (1, 1 + new[0] * new[1], 32)
    torch.testing.assert_close(ours, expected, rtol=0, atol=ATOL)
    assert torch.equal(ours[:, 0], pos_embed[:, 0])  # the [CLS] embedding is kept as is


# ---- parameter counts ----

TIMM_COUNTS = {  # from the issue: timm, 1000 classes, linear head
    "vit_tiny_patch16_224": 5_717_416,
    "vit_small_patch16_224": 22_050_664,
    "vit_base_patch16_224": 86_567_656,
    "vit_base_patch32_224": 88_224_232,
    "vit_large_patch16_224": 304_326_632,
    "vit_huge_patch14_224": 632_045_800,
}


def test_parameter_counts_equal_timm(tool):
    presets = list(TIMM_COUNTS)
    out = run(tool, "count", "--preset", ",".join(presets), "--num-classes", 1000, "--head", "linear")
    ours = dict(zip(presets, map(int, out.split())))
    theirs = {}
    for preset in presets:
        with torch.device("meta"):  # no memory, no initialisation cost
            model = timm.create_model(preset, pretrained=False, num_classes=1000)
        theirs[preset] = sum(p.numel() for p in model.parameters())
    assert theirs == TIMM_COUNTS
    assert ours == TIMM_COUNTS


# ---- safetensors round trips with Python's implementation ----

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def sample_tensors(dtype, prefix=""):
    g = torch.Generator().manual_seed(0)
    return {
        prefix + "blocks.0.attn.qkv.weight": (torch.randn(12, 4, generator=g) * 3).to(dtype),
        prefix + "scalar": torch.tensor(1.5, dtype=dtype),
        prefix + "empty": torch.zeros(0, 3, dtype=dtype),
        prefix + "special": torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 65504.0, 1e-7], dtype=dtype),
        prefix + "odd": torch.randn(3, 5, 7, generator=g).to(dtype),  # 105 elements: exercises alignment
    }


def assert_bit_identical(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(a[name].view(-1).view(torch.uint8) if a[name].numel() else a[name],
                           b[name].view(-1).view(torch.uint8) if b[name].numel() else b[name]), name


def test_python_written_file_reads_and_rewrites_bit_identically(tool, tmp_path):
    tensors = {}
    for name, dtype in DTYPES.items():  # F32, F16 and BF16 tensors in one file
        tensors.update(sample_tensors(dtype, prefix=name + "."))
    src, dst = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(tensors, str(src), metadata={"format": "pt", "note": "vitrain"})
    run(tool, "copy", "--in", src, "--out", dst)  # vitrain reads, then writes
    assert_bit_identical(load_file(str(dst)), tensors)
    with safe_open(str(dst), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "note": "vitrain"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_vitrain_written_dtype_matches_python_conversion(tool, tmp_path, dtype):
    tensors = sample_tensors(torch.float32)
    src, dst = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(tensors, str(src))
    run(tool, "copy", "--in", src, "--out", dst, "--dtype", dtype)  # vitrain converts and writes
    assert_bit_identical(load_file(str(dst)), {k: v.to(DTYPES[dtype]) for k, v in tensors.items()})


def test_truncated_file_fails_naming_it(tool, tmp_path):
    src = tmp_path / "cut.safetensors"
    save_file(sample_tensors(torch.float32), str(src))
    src.write_bytes(src.read_bytes()[:-10])
    result = subprocess.run([tool, "copy", "--in", src, "--out", tmp_path / "b.safetensors"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and str(src) in result.stderr


@pytest.mark.parametrize("save", ["savez", "savez_compressed"])
def test_vit_jax_npz_converts_like_timms_loader(tool, tmp_path, save):
    """A Google vit_jax .npz (np.savez or np.savez_compressed, JAX layouts) becomes the tensors
    timm's own _load_weights puts into a VisionTransformer: the independent reference for the
    name and layout mapping."""
    import numpy as np
    from timm.models.vision_transformer import _load_weights

    D, H, M, depth, P, K, tokens = 64, 4, 128, 2, 4, 10, 1 + 4 * 4
    rng = np.random.default_rng(0)
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    w = {"embedding/kernel": r(P, P, 3, D), "embedding/bias": r(D), "cls": r(1, 1, D),
         "Transformer/posembed_input/pos_embedding": r(1, tokens, D),
         "Transformer/encoder_norm/scale": r(D), "Transformer/encoder_norm/bias": r(D),
         "head/kernel": r(D, K), "head/bias": r(K)}
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        mha = b + "MultiHeadDotProductAttention_1/"
        for part in ("query", "key", "value"):
            w[mha + part + "/kernel"], w[mha + part + "/bias"] = r(D, H, D // H), r(H, D // H)
        w[mha + "out/kernel"], w[mha + "out/bias"] = r(H, D // H, D), r(D)
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            w[b + ln + "/scale"], w[b + ln + "/bias"] = r(D), r(D)
        w[b + "MlpBlock_3/Dense_0/kernel"], w[b + "MlpBlock_3/Dense_0/bias"] = r(D, M), r(M)
        w[b + "MlpBlock_3/Dense_1/kernel"], w[b + "MlpBlock_3/Dense_1/bias"] = r(M, D), r(D)
    npz = tmp_path / "vit_jax.npz"
    getattr(np, save)(npz, **w)

    model = VisionTransformer(img_size=16, patch_size=P, embed_dim=D, depth=depth, num_heads=H,
                              mlp_ratio=M / D, num_classes=K)
    _load_weights(model, str(npz))
    out = tmp_path / "converted.safetensors"
    run(tool, "copy", "--in", npz, "--out", out)
    ours = load_file(str(out))
    reference = model.state_dict()
    assert set(ours) == set(reference)
    for name, tensor in reference.items():
        assert torch.equal(ours[name], tensor), name
