"""PyTorch + timm reference of vitrain's CIFAR-10 recipe (configs/cifar10/pretrain.yaml).

timm VisionTransformer (token pooling), head `linear` (timm's own: trunc_normal(0.02), or zeros
with --linear-head-init zero as vitrain's) or `mlp` (pre_logits Linear D->D + tanh, then the
head; vitrain's pretraining head); RandomCrop(32, padding=4) + horizontal flip on uint8
tensors, per sample, on the training device; mean/std normalisation (vitrain's CIFAR values);
timm.data.Mixup (mixup 0.8 / cutmix 1.0, switch prob 0.5, batch mode, label smoothing 0.1)
with SoftTargetCrossEntropy, or plain label-smoothed cross entropy with --no-mix; AdamW
(fused) with timm's no-weight-decay groups (1-D params, biases, pos_embed, cls_token); linear
warmup (5%) + cosine per step (vitrain's formula); clip at global norm 1; bf16 autocast and
optional torch.compile on CUDA. The JPEGs are decoded once into a uint8 tensor.

    # CPU, small model, a few epochs
    python bench/accuracy/timm_reference.py --train /tmp/cifar/train --test /tmp/cifar/test \
        --width 128 --depth 4 --heads 4 --mlp 256 --batch 256 --epochs 3 --head mlp
    # GPU, full size (the team's reference recipe: 40 epochs, linear head)
    python bench/accuracy/timm_reference.py --train DIR/train --test DIR/test --device cuda \
        --compile --epochs 40 --head linear

Prints one JSON line per evaluation ({"epoch", "step", "accuracy", "loss", ...}) and a final
{"final": ...} line.
"""
import argparse
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from timm.data import Mixup
from timm.layers import trunc_normal_
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_weight_decay

MEAN = (0.4914, 0.4822, 0.4465)  # vitrain's data.mean / data.std defaults
STD = (0.2470, 0.2435, 0.2616)


def load_folder(root, limit_per_class=0, cache=True):
    """ImageFolder (class = sorted folder name) -> uint8 [N, 3, H, W], int64 [N]."""
    key = f"{os.path.abspath(root)}:{limit_per_class}".replace("/", "_")
    cache_file = f"/tmp/timm_ref_cache{key}.npz"
    if cache and os.path.exists(cache_file):
        d = np.load(cache_file)
        return torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    files, labels = [], []
    for k, c in enumerate(classes):
        names = sorted(f for f in os.listdir(os.path.join(root, c)) if f.lower().endswith((".jpg", ".jpeg")))
        if limit_per_class:
            names = names[:limit_per_class]
        files += [os.path.join(root, c, f) for f in names]
        labels += [k] * len(names)

    def read(path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    with ThreadPoolExecutor(8) as ex:
        arrays = list(ex.map(read, files, chunksize=256))
    x = np.stack(arrays).transpose(0, 3, 1, 2).copy()  # NHWC -> NCHW
    y = np.asarray(labels, dtype=np.int64)
    if cache:
        np.savez(cache_file, x=x, y=y)
    return torch.from_numpy(x), torch.from_numpy(y)


def pad_crop_flip(x, pad, flip=True, gen=None):
    """RandomCrop(H, padding=pad, fill=0) + RandomHorizontalFlip on a uint8 batch, per sample."""
    b, c, h, w = x.shape
    dev = x.device
    oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=gen)
    fl = (torch.rand(b, device=dev, generator=gen) < 0.5) if flip else torch.zeros(b, dtype=torch.bool, device=dev)
    xp = F.pad(x, (pad, pad, pad, pad))
    ar_h = torch.arange(h, device=dev)
    ar_w = torch.arange(w, device=dev)
    rows = oy[:, None] + ar_h[None]                                        # [B, H]
    cols = ox[:, None] + torch.where(fl[:, None], w - 1 - ar_w[None], ar_w[None])  # [B, W]
    idx = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return xp.reshape(b, c, -1).gather(2, idx).view(b, c, h, w)


class MlpHeadViT(nn.Module):
    """timm ViT whose head is pre_logits (Linear D->D, tanh) then Linear D->K (vitrain head: mlp)."""

    def __init__(self, vit, num_classes):
        super().__init__()
        d = vit.embed_dim
        vit.reset_classifier(0)
        self.vit = vit
        self.pre_logits = nn.Linear(d, d)
        self.head = nn.Linear(d, num_classes)
        for m in (self.pre_logits, self.head):
            trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def no_weight_decay(self):
        return {"vit." + n for n in self.vit.no_weight_decay()}

    def forward(self, x):
        return self.head(torch.tanh(self.pre_logits(self.vit(x))))


def lr_at(step, total, warmup, peak, min_lr=0.0):
    """vitrain's schedule (trainer/schedule.cpp): linear warmup (step+1)/warmup, cosine to min_lr."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay = total - warmup
    if decay <= 1:
        return peak
    t = min(1.0, (step - warmup) / (decay - 1))
    return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * t))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--limit-train", type=int, default=0, help="images per class (0: all)")
    p.add_argument("--limit-test", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--mlp", type=int, default=1536)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--head", choices=["mlp", "linear"], default="linear")
    p.add_argument("--linear-head-init", choices=["timm", "zero"], default="timm")
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup-fraction", type=float, default=0.05)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--mixup", type=float, default=0.8)
    p.add_argument("--cutmix", type=float, default=1.0)
    p.add_argument("--no-mix", action="store_true", help="mixup 0, cutmix 0")
    p.add_argument("--pad", type=int, default=4)
    p.add_argument("--eval-every", type=int, default=1, help="epochs between evaluations")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.no_mix:
        a.mixup = a.cutmix = 0.0
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(a.seed)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    t0 = time.time()
    xtr, ytr = load_folder(a.train, a.limit_train)
    xte, yte = load_folder(a.test, a.limit_test)
    xtr, ytr, xte, yte = xtr.to(dev), ytr.to(dev), xte.to(dev), yte.to(dev)
    load_s = time.time() - t0
    num_classes = int(ytr.max()) + 1
    mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=dev).view(1, 3, 1, 1) * 255

    vit = VisionTransformer(img_size=xtr.shape[-1], patch_size=a.patch, embed_dim=a.width, depth=a.depth,
                            num_heads=a.heads, mlp_ratio=a.mlp / a.width, num_classes=num_classes,
                            drop_path_rate=a.drop_path)
    if a.head == "mlp":
        model = MlpHeadViT(vit, num_classes)
    else:
        model = vit
        if a.linear_head_init == "zero":
            nn.init.zeros_(model.head.weight)
            nn.init.zeros_(model.head.bias)
    model.to(dev)
    groups = param_groups_weight_decay(model, a.wd, no_weight_decay_list=model.no_weight_decay())
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    net = torch.compile(model) if a.compile else model

    mixer = None
    if a.mixup > 0 or a.cutmix > 0:
        mixer = Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, label_smoothing=a.smoothing,
                      num_classes=num_classes)
        criterion = SoftTargetCrossEntropy()
    else:
        criterion = LabelSmoothingCrossEntropy(a.smoothing) if a.smoothing > 0 else nn.CrossEntropyLoss()

    n = xtr.shape[0]
    steps_per_epoch = n // a.batch  # drop the tail, as vitrain
    total = steps_per_epoch * a.epochs
    warmup = round(a.warmup_fraction * total)
    gen = torch.Generator(device=dev)
    gen.manual_seed(a.seed + 1)

    def normalise(u8):
        return (u8.float() - mean) / std

    @torch.no_grad()
    def evaluate():
        net.eval()
        correct, loss_sum = 0, 0.0
        for i in range(0, xte.shape[0], 1000):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = net(normalise(xte[i:i + 1000])).float()
            loss_sum += F.cross_entropy(logits, yte[i:i + 1000], reduction="sum").item()
            correct += (logits.argmax(-1) == yte[i:i + 1000]).sum().item()
        net.train()
        return correct / xte.shape[0], loss_sum / xte.shape[0]

    print(json.dumps({"config": vars(a), "train_images": n, "test_images": xte.shape[0], "steps": total,
                      "warmup": warmup, "params": sum(p.numel() for p in model.parameters()),
                      "load_s": round(load_s, 1)}), flush=True)
    step = 0
    t_train = time.time()
    net.train()
    acc = loss = None
    for epoch in range(a.epochs):
        perm = torch.randperm(n, device=dev, generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * a.batch:(s + 1) * a.batch]
            x = normalise(pad_crop_flip(xtr[idx], a.pad, gen=gen))
            y = ytr[idx]
            if mixer is not None:
                x, y = mixer(x, y)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, warmup, a.lr)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = net(x)
            l = criterion(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            l.backward()
            if a.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()
            step += 1
        if (epoch + 1) % a.eval_every == 0 or epoch + 1 == a.epochs:
            acc, loss = evaluate()
            print(json.dumps({"epoch": epoch + 1, "step": step, "accuracy": round(acc, 4), "loss": round(loss, 4),
                              "last_train_loss": round(l.item(), 4), "train_s": round(time.time() - t_train, 1)}),
                  flush=True)
    print(json.dumps({"final": {"accuracy": acc, "loss": loss, "epochs": a.epochs, "steps": total,
                                "train_s": round(time.time() - t_train, 1), "head": a.head,
                                "mix": not a.no_mix and mixer is not None}}), flush=True)


if __name__ == "__main__":
    main()
