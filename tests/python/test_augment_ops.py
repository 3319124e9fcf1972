"""vitrain's RandAugment and TrivialAugment ops and policies against independent references.

Each op of data/augment_ops.h (run through the `vit-augment-tool` test helper, whose path comes in
the VIT_AUGMENT_TOOL environment variable) against torchvision's functional op on uint8 images at
fixed magnitudes (timm's SolarizeAdd, which torchvision lacks, against its lookup table), the
plans drawn for timm's policy strings against timm's level-to-argument rules, and the plans of
"trivial" against torchvision's TrivialAugmentWide.

Tolerance: the colour ops equal torchvision's uint8 output exactly (same float32 arithmetic, same
truncation). The geometric ops (rotate, shear, translate) build their sampling grid with other
float32 roundings than torchvision's: at most 1 grey level off, on at most 5% of the pixels (a
half-pixel shift puts many values on a .5 tie, which a last-bit difference rounds the other way).
"""
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from torchvision.transforms.functional import _get_inverse_affine_matrix

TOOL = os.environ.get("VIT_AUGMENT_TOOL", "")
# augment_ops.h's op codes.
NONE, AFFINE, AUTOCONTRAST, EQUALIZE, INVERT, POSTERIZE, SOLARIZE, SOLARIZE_ADD, COLOR, CONTRAST, BRIGHTNESS, \
    SHARPNESS = range(12)
FILL = [125, 123, 114]


@pytest.fixture(scope="session")
def tool():
    assert TOOL and Path(TOOL).is_file(), "set VIT_AUGMENT_TOOL to the vit-augment-tool executable (ctest does)"
    return TOOL


def images(h, w, batch=6, seed=0):
    """Natural-ish uint8 images: smooth colour gradients with noise, each in its own value range."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h).view(h, 1)
    x = torch.linspace(0, 1, w).view(1, w)
    out = []
    for i in range(batch):
        lo, hi = 10 + 15 * i, 150 + 15 * i
        base = torch.stack([x * (1 + c) + y * (2 - c) for c in range(3)]) / 3
        noise = torch.rand(3, h, w, generator=g) * 0.3
        out.append(lo + (hi - lo) * ((base + noise) / 1.3).clamp(0, 1))
    return torch.stack(out).round().to(torch.uint8)


def run_ops(tool, tmp_path, imgs, rows):
    """Applies op row i to image i in vitrain; returns uint8 results."""
    src, dst = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    ops = torch.tensor([r + [0.0] * (9 - len(r)) for r in rows], dtype=torch.float64)
    save_file({"images": imgs.contiguous(), "ops": ops}, str(src))
    result = subprocess.run([tool, "ops", "--in", src, "--out", dst, "--fill", ",".join(map(str, FILL))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = load_file(str(dst))["out"]
    assert torch.equal(out, out.round()) and out.min() >= 0 and out.max() <= 255
    return out.to(torch.uint8)


COLOUR_CASES = [
    ("autocontrast", [AUTOCONTRAST], F.autocontrast),
    ("equalize", [EQUALIZE], F.equalize),
    ("invert", [INVERT], F.invert),
    *[(f"posterize{b}", [POSTERIZE, b], lambda im, b=b: F.posterize(im, b)) for b in (0, 1, 2, 4, 7)],
    *[(f"solarize{t}", [SOLARIZE, t], lambda im, t=t: F.solarize(im, float(t))) for t in (0, 26, 128, 230, 246.5, 255)],
    ("solarize256", [SOLARIZE, 256], lambda im: im),  # timm's level 0; torchvision refuses 256: nothing changes
    # Factors 0.1-1.9 are RandAugment's range, 0.01 and 1.99 TrivialAugment's ends.
    *[(f"color{r}", [COLOR, r], lambda im, r=r: F.adjust_saturation(im, r)) for r in (0.01, 0.1, 0.55, 1.0, 1.81, 1.99)],
    *[(f"contrast{r}", [CONTRAST, r], lambda im, r=r: F.adjust_contrast(im, r)) for r in (0.01, 0.1, 0.73, 1.3, 1.99)],
    *[(f"brightness{r}", [BRIGHTNESS, r], lambda im, r=r: F.adjust_brightness(im, r))
      for r in (0.01, 0.1, 0.64, 1.45, 1.99)],
    *[(f"sharpness{r}", [SHARPNESS, r], lambda im, r=r: F.adjust_sharpness(im, r)) for r in (0.01, 0.1, 0.5, 1.3, 1.99)],
]


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
@pytest.mark.parametrize("name,row,reference", COLOUR_CASES, ids=[c[0] for c in COLOUR_CASES])
def test_colour_op_equals_torchvision(tool, tmp_path, size, name, row, reference):
    imgs = images(*size)
    ours = run_ops(tool, tmp_path, imgs, [row] * len(imgs))
    theirs = torch.stack([reference(im) for im in imgs])
    assert torch.equal(ours, theirs), f"{name}: {(ours.int() - theirs.int()).abs().max()} levels off"


def test_constant_image_stats_ops_are_identity_where_torchvision_is(tool, tmp_path):
    flat = torch.full((2, 3, 16, 16), 77, dtype=torch.uint8)
    for row, ref in [([AUTOCONTRAST], F.autocontrast), ([EQUALIZE], F.equalize), ([CONTRAST, 0.4],
                                                                                 lambda im: F.adjust_contrast(im, 0.4))]:
        assert torch.equal(run_ops(tool, tmp_path, flat, [row] * 2), torch.stack([ref(im) for im in flat]))


def test_solarize_add_is_timms_lookup_table(tool, tmp_path):
    imgs = images(20, 20)
    for add in (0, 30, 99, 110):
        ours = run_ops(tool, tmp_path, imgs, [[SOLARIZE_ADD, add]] * len(imgs))
        lut = torch.tensor([min(255, i + add) if i < 128 else i for i in range(256)], dtype=torch.uint8)
        assert torch.equal(ours, lut[imgs.long()])


GEOMETRIC_CASES = [
    *[(f"rotate{a}", [AFFINE, 0, a], lambda im, a=a: F.rotate(im, -a, InterpolationMode.BILINEAR, fill=FILL))
      for a in (-135.0, -27.0, -9.5, 13.0, 30.0, 99.0)],
    *[(f"shear_x{f}", [AFFINE, 0, 0, 0, 0, math.degrees(math.atan(f)), 0, 1],
       lambda im, f=f: F.affine(im, 0.0, [0, 0], 1.0, [math.degrees(math.atan(f)), 0.0], InterpolationMode.BILINEAR,
                                FILL, center=[0, 0])) for f in (-0.99, -0.27, 0.12, 0.3, 0.66)],
    *[(f"shear_y{f}", [AFFINE, 0, 0, 0, 0, 0, math.degrees(math.atan(f)), 1],
       lambda im, f=f: F.affine(im, 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(f))], InterpolationMode.BILINEAR,
                                FILL, center=[0, 0])) for f in (-0.3, 0.2, 0.99)],
    *[(f"translate{tx},{ty}", [AFFINE, 0, 0, tx, ty],
       lambda im, tx=tx, ty=ty: F.affine(im, 0.0, [tx, ty], 1.0, [0.0, 0.0], InterpolationMode.BILINEAR, FILL))
      for tx, ty in ((-12.96, 0.0), (0.0, 7.5), (3.0, -4.0), (32.0, 0.0), (0.0, -17.0))],
]


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
@pytest.mark.parametrize("name,row,reference", GEOMETRIC_CASES, ids=[c[0] for c in GEOMETRIC_CASES])
def test_geometric_op_matches_torchvision_within_one_level(tool, tmp_path, size, name, row, reference):
    # rows: torchvision's F.affine arguments (angle is F.affine's, so rotate(a) is angle -a).
    imgs = images(*size)
    ours = run_ops(tool, tmp_path, imgs, [row] * len(imgs)).int()
    theirs = torch.stack([reference(im) for im in imgs]).int()
    diff = (ours - theirs).abs()
    assert diff.max() <= 1, f"{name}: {diff.max()} levels off"
    assert (diff > 0).float().mean() <= 0.05, f"{name}: {(diff > 0).float().mean():.3%} of pixels off by one"


def test_identity_affine_copies_exactly(tool, tmp_path):
    imgs = images(24, 40)
    assert torch.equal(run_ops(tool, tmp_path, imgs, [[AFFINE]] * len(imgs)), imgs)


# ---- timm's policy: what ops and arguments the plans hold ----

def draw_plans(tool, tmp_path, spec, count, size=(32, 32), erase=0.0):
    out = tmp_path / "plans.safetensors"
    result = subprocess.run([tool, "plans", "--spec", spec, "--count", str(count), "--size", f"{size[0]}x{size[1]}",
                             "--erase", str(erase), "--out", out], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return load_file(str(out))


def inverse_matrix_in_index_coords(h, w, center, angle, translate, shear):
    """torchvision's inverse affine matrix, moved to pixel-index coordinates as augment_ops.h reads it."""
    m = _get_inverse_affine_matrix(center, angle, translate, 1.0, shear)
    ox, oy = 0.5 - w / 2, 0.5 - h / 2
    return [m[0], m[1], m[0] * ox + m[1] * oy + m[2] - ox, m[3], m[4], m[3] * ox + m[4] * oy + m[5] - oy]


def expected_layers_m9(h, w):
    """Every (op, a, b, m) that timm's rand-m9-mstd0-inc1 can give at magnitude 9, as vitrain plans it."""
    f = 0.9
    identity = [0.0] * 6
    out = {("autocontrast",): (AUTOCONTRAST, 0, 0, identity), ("equalize",): (EQUALIZE, 0, 0, identity),
           ("invert",): (INVERT, 0, 0, identity),
           ("posterize",): (POSTERIZE, 4 - int(f * 4), 0, identity),
           ("solarize",): (SOLARIZE, 256 - int(f * 256), 0, identity),
           ("solarize_add",): (SOLARIZE_ADD, int(f * 110), 128, identity)}
    for sign in (1, -1):
        factor = 1 + sign * f * 0.9
        for name, code in (("color", COLOR), ("contrast", CONTRAST), ("brightness", BRIGHTNESS),
                           ("sharpness", SHARPNESS)):
            out[(name, sign)] = (code, np.float32(factor), np.float32(1 - factor), identity)
        deg = sign * f * 30
        out[("rotate", sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, [0, 0], -deg, [0, 0], [0, 0]))
        shear = math.degrees(math.atan(sign * f * 0.3))
        corner = [-w / 2, -h / 2]
        out[("shear_x", sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, corner, 0, [0, 0], [shear, 0]))
        out[("shear_y", sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, corner, 0, [0, 0], [0, shear]))
        pixels = sign * f * 0.45
        out[("translate_x", sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, [0, 0], 0, [-pixels * w, 0],
                                                                                   [0, 0]))
        out[("translate_y", sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, [0, 0], 0, [0, -pixels * h],
                                                                                   [0, 0]))
    return out


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_rand_m9_plans_hold_timms_arguments_in_timms_proportions(tool, tmp_path, size):
    count = 3000
    plans = draw_plans(tool, tmp_path, "rand-m9-mstd0-inc1-n2-p1", count, size)
    expected = expected_layers_m9(*size)
    seen = {k: 0 for k in expected}
    for i in range(count):
        for layer in range(2):
            op, a, b = int(plans["op"][i, layer]), float(plans["a"][i, layer]), float(plans["b"][i, layer])
            m = plans["m"][i, layer].tolist()
            match = [k for k, (eop, ea, eb, em) in expected.items()
                     if eop == op and abs(ea - a) < 1e-6 and abs(eb - b) < 1e-6 and np.allclose(em, m, atol=1e-4)]
            assert len(match) >= 1, f"plan {i} layer {layer}: op {op} a {a} b {b} m {m} is none of timm's"
            seen[match[0]] += 1
        assert int(plans["op"][i, 2]) == NONE and int(plans["op"][i, 3]) == NONE
    # 15 ops chosen uniformly with replacement; the signed ones split their share in two.
    per_op = {}
    for k, v in seen.items():
        per_op[k[0]] = per_op.get(k[0], 0) + v
    assert len(per_op) == 15
    for name, v in per_op.items():
        assert abs(v / (2 * count) - 1 / 15) < 0.015, f"{name}: {v / (2 * count):.3f} of the layers"
    for k, v in seen.items():
        if len(k) == 2:
            assert v > 0.3 * per_op[k[0]], f"{k}: one sign is too rare"


def test_probability_and_magnitude_noise(tool, tmp_path):
    count = 4000
    plans = draw_plans(tool, tmp_path, "rand-m9-mstd0.5-inc1", count)
    applied = (plans["op"][:, :2] != NONE).float().mean().item()
    assert abs(applied - 0.5) < 0.03, f"each op applies with p = 0.5 (timm's default), saw {applied:.3f}"
    # Brightness factors 1 +- level * 0.09 with level ~ N(9, 0.5) clipped to [0, 10]: spread, inside [0.1, 1.9].
    bright = plans["a"][:, :2][plans["op"][:, :2] == BRIGHTNESS]
    levels = ((bright - 1).abs() / 0.09).numpy()
    assert levels.max() <= 10 + 1e-4 and abs(levels.mean() - 9) < 0.1 and 0.35 < levels.std() < 0.6
    assert draw_plans(tool, tmp_path, "none", 10)["op"].abs().sum() == 0


def test_random_erasing_boxes_follow_timm(tool, tmp_path):
    count, (h, w) = 4000, (32, 32)
    boxes = draw_plans(tool, tmp_path, "none", count, (h, w), erase=0.25)["erase"].numpy()
    erased = boxes[:, 2] > 0
    assert abs(erased.mean() - 0.25) < 0.03
    top, left, bh, bw = boxes[erased].T
    area = bh * bw / (h * w)
    assert (bh < h).all() and (bw < w).all() and (top + bh <= h).all() and (left + bw <= w).all()
    assert area.min() >= 0.01 and area.max() <= 0.4 and 0.12 < area.mean() < 0.2


def expected_layers_trivial(h, w):
    """Every (op, a, b, m) of torchvision's TrivialAugmentWide, as vitrain plans it, keyed by (op, bin, sign).

    The magnitudes are torchvision's linspace(0, max, 31) in exact arithmetic; its float32 values
    differ in the last bit (checked below), which only changes int() of a translation at a bin
    whose exact value is a whole number of pixels."""
    identity = [0.0] * 6
    out = {}
    for bin_ in range(31):
        step = bin_ / 30
        out[("identity", bin_, 1)] = (NONE, 0, 0, identity)
        out[("autocontrast", bin_, 1)] = (AUTOCONTRAST, 0, 0, identity)
        out[("equalize", bin_, 1)] = (EQUALIZE, 0, 0, identity)
        bits = 8 - round(bin_ / 5)
        out[("posterize", bin_, 1)] = (NONE, 0, 0, identity) if bits >= 8 else (POSTERIZE, bits, 0, identity)
        out[("solarize", bin_, 1)] = (SOLARIZE, np.float32(255 * (1 - step)), 0, identity)
        for sign in (1, -1):
            factor = 1 + sign * 0.99 * step
            for name, code in (("color", COLOR), ("contrast", CONTRAST), ("brightness", BRIGHTNESS),
                               ("sharpness", SHARPNESS)):
                out[(name, bin_, sign)] = (code, np.float32(factor), np.float32(1 - factor), identity)
            corner = [-w / 2, -h / 2]
            shear = math.degrees(math.atan(sign * 0.99 * step))
            out[("shear_x", bin_, sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, corner, 0, [0, 0],
                                                                                        [shear, 0]))
            out[("shear_y", bin_, sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, corner, 0, [0, 0],
                                                                                        [0, shear]))
            pixels = int(sign * 32 * step)
            out[("translate_x", bin_, sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, [0, 0], 0,
                                                                                            [pixels, 0], [0, 0]))
            out[("translate_y", bin_, sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, [0, 0], 0,
                                                                                            [0, pixels], [0, 0]))
            out[("rotate", bin_, sign)] = (AFFINE, 0, 0, inverse_matrix_in_index_coords(h, w, [0, 0], -sign * 135 * step,
                                                                                       [0, 0], [0, 0]))
    return out


def test_trivial_augment_magnitudes_are_torchvisions():
    from torchvision.transforms import TrivialAugmentWide
    space = TrivialAugmentWide()._augmentation_space(31)
    assert list(space) == ["Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
                           "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize"]
    exact = {"ShearX": 0.99, "ShearY": 0.99, "TranslateX": 32.0, "TranslateY": 32.0, "Rotate": 135.0,
             "Brightness": 0.99, "Color": 0.99, "Contrast": 0.99, "Sharpness": 0.99}
    for name, top in exact.items():
        values, signed = space[name]
        assert signed
        assert np.allclose(values.numpy(), [top * b / 30 for b in range(31)], rtol=1e-6, atol=1e-6), name
    assert space["Posterize"][0].tolist() == [8 - round(b / 5) for b in range(31)]
    assert np.allclose(space["Solarize"][0].numpy(), [255 * (1 - b / 30) for b in range(31)], rtol=0, atol=1e-4)


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_trivial_plans_hold_torchvisions_arguments_uniformly(tool, tmp_path, size):
    count = 7000
    plans = draw_plans(tool, tmp_path, "trivial", count, size)
    by_code = {}  # op code -> [a, b, m0..m5] rows of the expected layers
    for eop, ea, eb, em in expected_layers_trivial(*size).values():
        by_code.setdefault(eop, []).append([ea, eb, *em])
    by_code = {k: np.array(v, dtype=np.float64) for k, v in by_code.items()}
    tolerance = np.array([1e-5, 1e-5] + [1e-4] * 6)
    codes, bins, signs = [], [], []
    for i in range(count):
        op = int(plans["op"][i, 0])
        got = np.array([float(plans["a"][i, 0]), float(plans["b"][i, 0]), *plans["m"][i, 0].tolist()])
        match = op in by_code and (np.abs(by_code[op] - got) <= tolerance).all(axis=1).any()
        assert match, f"plan {i}: op {op}, a, b, m {got.tolist()} is none of TrivialAugmentWide's"
        assert all(int(plans["op"][i, layer]) == NONE for layer in range(1, 4)), "one op per image"
        codes.append(op)
        if op == BRIGHTNESS:
            bins.append(round(abs(got[0] - 1) / 0.033))
            signs.append(got[0] > 1)
    codes = np.array(codes)
    # 14 ops, each 1/14: the five geometric ones share AFFINE; posterize's first 3 bins are 8 bits (nothing).
    share = {AFFINE: 5 / 14, POSTERIZE: 28 / 31 / 14, NONE: 1 / 14 + 3 / 31 / 14}
    for code in (AFFINE, POSTERIZE, NONE, AUTOCONTRAST, EQUALIZE, SOLARIZE, COLOR, CONTRAST, BRIGHTNESS, SHARPNESS):
        seen = (codes == code).mean()
        assert abs(seen - share.get(code, 1 / 14)) < 0.015, f"op {code}: {seen:.3f} of the images"
    # Magnitude bins uniform over 31 (bin 0 has no sign), signs even.
    counts = np.bincount(bins, minlength=31)
    assert counts.min() > 0 and counts.max() < 3.5 * len(bins) / 31, counts
    nonzero = np.array(bins) > 0
    assert abs(np.array(signs)[nonzero].mean() - 0.5) < 0.08


def test_bad_policy_strings_name_the_key(tool, tmp_path):
    for spec in ("rand-m9-x3", "augmix-m5", "rand-n9", "rand-m", "trivial-m9"):
        result = subprocess.run([tool, "plans", "--spec", spec, "--count", "1", "--out", tmp_path / "p.safetensors"],
                                capture_output=True, text=True)
        assert result.returncode != 0 and "data.rand_augment" in result.stderr, (spec, result.stderr)
