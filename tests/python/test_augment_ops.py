"""vitrain's RandAugment ops and policy against independent references.

Each op of data/augment_ops.h (run through the `vit-augment-tool` test helper, whose path comes in
the VIT_AUGMENT_TOOL environment variable) against torchvision's functional op on uint8 images at
fixed magnitudes (timm's SolarizeAdd, which torchvision lacks, against its lookup table), and the
plans drawn for timm's policy strings against timm's level-to-argument rules.

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
    *[(f"solarize{t}", [SOLARIZE, t], lambda im, t=t: F.solarize(im, float(t))) for t in (26, 128, 230, 255)],
    ("solarize256", [SOLARIZE, 256], lambda im: im),  # timm's level 0; torchvision refuses 256: nothing changes
    *[(f"color{r}", [COLOR, r], lambda im, r=r: F.adjust_saturation(im, r)) for r in (0.1, 0.55, 1.0, 1.81)],
    *[(f"contrast{r}", [CONTRAST, r], lambda im, r=r: F.adjust_contrast(im, r)) for r in (0.1, 0.73, 1.3, 1.9)],
    *[(f"brightness{r}", [BRIGHTNESS, r], lambda im, r=r: F.adjust_brightness(im, r)) for r in (0.1, 0.64, 1.45, 1.9)],
    *[(f"sharpness{r}", [SHARPNESS, r], lambda im, r=r: F.adjust_sharpness(im, r)) for r in (0.1, 0.5, 1.3, 1.9)],
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
      for a in (-27.0, -9.5, 13.0, 30.0)],
    *[(f"shear_x{f}", [AFFINE, 0, 0, 0, 0, math.degrees(math.atan(f)), 0, 1],
       lambda im, f=f: F.affine(im, 0.0, [0, 0], 1.0, [math.degrees(math.atan(f)), 0.0], InterpolationMode.BILINEAR,
                                FILL, center=[0, 0])) for f in (-0.27, 0.12, 0.3)],
    *[(f"shear_y{f}", [AFFINE, 0, 0, 0, 0, 0, math.degrees(math.atan(f)), 1],
       lambda im, f=f: F.affine(im, 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(f))], InterpolationMode.BILINEAR,
                                FILL, center=[0, 0])) for f in (-0.3, 0.2)],
    *[(f"translate{tx},{ty}", [AFFINE, 0, 0, tx, ty],
       lambda im, tx=tx, ty=ty: F.affine(im, 0.0, [tx, ty], 1.0, [0.0, 0.0], InterpolationMode.BILINEAR, FILL))
      for tx, ty in ((-12.96, 0.0), (0.0, 7.5), (3.0, -4.0))],
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


def test_bad_policy_strings_name_the_key(tool, tmp_path):
    for spec in ("rand-m9-x3", "augmix-m5", "rand-n9", "rand-m"):
        result = subprocess.run([tool, "plans", "--spec", spec, "--count", "1", "--out", tmp_path / "p.safetensors"],
                                capture_output=True, text=True)
        assert result.returncode != 0 and "data.rand_augment" in result.stderr, (spec, result.stderr)
