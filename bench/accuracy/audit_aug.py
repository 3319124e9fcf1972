"""Audits what vitrain's resident loader feeds the model (the files aug_dump.cpp writes).

    python bench/accuracy/audit_aug.py DUMP_DIR TRAIN_DIR TEST_DIR [--batch 256] [--png grid.png]

Checks: sampler ids -> labels (against a PIL decode of the sorted ImageFolder); pad-crop
offsets (recovered by search over all 9x9 offsets x flip) uniform in [0, 2*pad], flips ~50%;
normalisation constants (fitted per channel); mixup / cutmix: the pixels are lam*x + (1-lam)*x
reversed or a box from the reversed batch, and the soft targets carry the same lam and sum to
1; the eval batch is the un-augmented, normalised image. Writes a PNG grid (source | augmented
| finished, de-normalised) for a cutmix batch and a mixup batch.
"""
import argparse
import glob
import os

import numpy as np
from PIL import Image, ImageDraw

MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.2470, 0.2435, 0.2616], np.float32).reshape(1, 3, 1, 1)


def load(path, dtype, shape):
    return np.fromfile(path, dtype).reshape(shape)


def folder_files(root):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    files, labels = [], []
    for k, c in enumerate(classes):
        names = sorted(f for f in os.listdir(os.path.join(root, c)) if f.lower().endswith((".jpg", ".jpeg")))
        files += [os.path.join(root, c, f) for f in names]
        labels += [k] * len(names)
    return classes, files, np.array(labels)


def crops(raw, pad):
    """All (oy, ox, flip) crops of the zero-padded batch: [B, 2P+1, 2P+1, 2, 3, H, W] as float."""
    b, c, h, w = raw.shape
    xp = np.pad(raw, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float32)
    out = np.empty((b, 2 * pad + 1, 2 * pad + 1, 2, c, h, w), np.float32)
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            win = xp[:, :, oy:oy + h, ox:ox + w]
            out[:, oy, ox, 0] = win
            out[:, oy, ox, 1] = win[..., ::-1]
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dump")
    p.add_argument("train")
    p.add_argument("test")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--pad", type=int, default=4)
    p.add_argument("--png", default="/tmp/aug_grid.png")
    a = p.parse_args()
    B, P = a.batch, a.pad
    classes, files, folder_labels = folder_files(a.train)
    steps = len(glob.glob(os.path.join(a.dump, "step*_ids.i64")))
    offsets, flips, ambiguous, unmatched = [], [], 0, 0
    lam_err, tgt_err, kinds, lams = [], [], [], []
    pil_maxdiff = 0
    grid_batches = {}
    for s in range(steps):
        f = lambda n: os.path.join(a.dump, f"step{s}_{n}")
        ids = load(f("ids.i64"), np.int64, (B,))
        raw = load(f("raw.u8"), np.uint8, (B, 3, 32, 32))
        aug = load(f("aug.f32"), np.float32, (B, 3, 32, 32))
        fin = load(f("fin.f32"), np.float32, (B, 3, 32, 32))
        labels = load(f("labels.i64"), np.int64, (B,))
        assert len(set(ids.tolist())) == B, "duplicate ids in a batch"
        # 1. labels: the loader's labels = the folder of file ids[i]
        assert (labels == folder_labels[ids]).all(), f"step {s}: labels do not match the files' folders"
        for i in range(0, B, 37):  # raw pixels = PIL decode of that file
            im = np.asarray(Image.open(files[ids[i]]).convert("RGB")).transpose(2, 0, 1)
            pil_maxdiff = max(pil_maxdiff, int(np.abs(im.astype(int) - raw[i].astype(int)).max()))
        # 2. pad-crop + flip: recover the offset of each sample
        cand = crops(raw, P)
        match = (np.abs(cand - aug[:, None, None, None]).reshape(B, 2 * P + 1, 2 * P + 1, 2, -1).max(-1) == 0)
        for i in range(B):
            m = np.argwhere(match[i])
            if len(m) == 0:
                unmatched += 1
                continue
            if len(m) > 1:
                ambiguous += 1
                continue
            offsets.append(m[0][:2])
            flips.append(m[0][2])
        # 3. finish: normalisation, then mixing
        norm = (aug / 255.0 - MEAN) / STD
        tpath = f("targets.f32")
        if not os.path.exists(tpath):
            kinds.append("none")
            assert np.abs(fin - norm).max() < 1e-4
            continue
        targets = load(tpath, np.float32, (B, 10))
        assert np.abs(targets.sum(1) - 1).max() < 1e-5, "targets do not sum to 1"
        partner = norm[::-1]
        same = np.abs(fin - norm).max(axis=(0, 1)) < 1e-4        # [H, W]: pixels kept from own image
        swapped = np.abs(fin - partner).max(axis=(0, 1)) < 1e-4  # pixels from the partner
        if (same | swapped).all() and swapped.any():  # cutmix: one box from the partner
            kinds.append("cutmix")
            ys, xs = np.nonzero(swapped & ~same)
            box = swapped.copy()
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            box[:] = False
            box[y0:y1, x0:x1] = True
            assert (swapped[box]).all(), "cutmix region is not a box"
            lam = 1 - box.sum() / box.size
        elif (same | swapped).all():  # lam == 1 cutmix (empty box) or identical
            kinds.append("cutmix-empty")
            lam = 1.0
        else:
            kinds.append("mixup")
            d = (norm - partner).ravel()
            lam = float(np.dot(fin.ravel() - partner.ravel(), d) / np.dot(d, d))
            lam_err.append(np.abs(lam * norm + (1 - lam) * partner - fin).max())
        lams.append(lam)
        oh = np.eye(10, dtype=np.float32)[labels]
        expect = lam * oh + (1 - lam) * oh[::-1]
        tgt_err.append(np.abs(expect - targets).max())
        if kinds[-1] in ("cutmix", "mixup") and kinds[-1] not in grid_batches:
            grid_batches[kinds[-1]] = (raw, aug, fin, labels, targets, lam)

    offsets = np.array(offsets)
    flips = np.array(flips)
    print(f"train batches: {steps} x {B}; kinds: " + ", ".join(f"{k}={kinds.count(k)}" for k in sorted(set(kinds))))
    print(f"labels = folder of file ids: ok; raw pixels vs PIL decode: max |diff| {pil_maxdiff}")
    print(f"pad-crop offsets recovered: {len(offsets)} unique, {ambiguous} ambiguous, {unmatched} unmatched")
    for name, v in (("oy", offsets[:, 0]), ("ox", offsets[:, 1])):
        counts = np.bincount(v, minlength=2 * P + 1)
        exp = len(v) / (2 * P + 1)
        chi2 = ((counts - exp) ** 2 / exp).sum()
        print(f"  {name} in [{v.min()}, {v.max()}], counts {counts.tolist()}, chi2 {chi2:.1f} (dof {2 * P}, 99%: 20.1)")
    print(f"  flip fraction {flips.mean():.3f}")
    print(f"  corr(oy, ox) {np.corrcoef(offsets[:, 0], offsets[:, 1])[0, 1]:+.3f}, "
          f"corr(ox, flip) {np.corrcoef(offsets[:, 1], flips)[0, 1]:+.3f}")
    print(f"mixing: lam per batch {np.round(lams, 3).tolist()}")
    print(f"  mixup pixel residual max {max(lam_err) if lam_err else 0:.2e}; targets vs lam max |err| {max(tgt_err):.2e}")
    # normalisation: unmixed pixels (all of an unmixed batch, outside the cutmix box) equal
    # (aug / 255 - MEAN) / STD with vitrain's CIFAR constants to 1e-4 (checked above), and the
    # mixup residual is computed against the same normalised images.
    print(f"normalisation: (x/255 - {MEAN.ravel().tolist()}) / {STD.ravel().tolist()} reproduces the loader's pixels")
    # eval batch: normalised source image, same order, no augmentation or mixing
    e_fin = load(os.path.join(a.dump, "eval_fin.f32"), np.float32, (B, 3, 32, 32))
    e_raw = load(os.path.join(a.dump, "eval_raw.u8"), np.uint8, (B, 3, 32, 32)).astype(np.float32)
    e_lab = load(os.path.join(a.dump, "eval_labels.i64"), np.int64, (B,))
    _, _, test_labels = folder_files(a.test)
    e_err = np.abs(e_fin - (e_raw / 255.0 - MEAN) / STD).max()
    print(f"eval batch: max |fin - normalise(source)| {e_err:.2e}; labels match folders: "
          f"{(e_lab == test_labels[:B]).all()}")
    # PNG: rows of (source | augmented | finished) for the first 12 samples of each mixed batch
    tiles = []
    for kind, (raw, aug, fin, labels, targets, lam) in grid_batches.items():
        den = np.clip((fin * STD + MEAN) * 255, 0, 255)
        for i in range(12):
            row = np.concatenate([raw[i], np.zeros((3, 32, 4)), aug[i], np.zeros((3, 32, 4)), den[i]], axis=2)
            top = np.argsort(-targets[i])[:2]
            caption = f"{kind} lam={lam:.2f} {classes[labels[i]]} | " + " ".join(
                f"{classes[t]}:{targets[i, t]:.2f}" for t in top)
            tiles.append((row.transpose(1, 2, 0).astype(np.uint8), caption))
    scale = 3
    W = (32 * 3 + 8) * scale + 330
    img = Image.new("RGB", (W, len(tiles) * (32 * scale + 4)), "white")
    dr = ImageDraw.Draw(img)
    for r, (t, cap) in enumerate(tiles):
        y = r * (32 * scale + 4)
        img.paste(Image.fromarray(t).resize((t.shape[1] * scale, 32 * scale), Image.NEAREST), (0, y))
        dr.text(((32 * 3 + 8) * scale + 6, y + 40), cap, fill="black")
    img.save(a.png)
    print(f"grid: {a.png}")


if __name__ == "__main__":
    main()
