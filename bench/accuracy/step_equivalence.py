"""Replays vitrain's first training steps in PyTorch + timm from the same weights and batches.

vitrain runs (augmentation, mixing and drop path off, constant lr, linear head, fp32 CPU):
  INIT: train.steps=1, optim.lr=1e-30 (the initial weights, to 1e-30)
  RUN:  train.steps=3, checkpoint.every_steps=1 (weights after steps 1, 2, 3)
The batches are recomputed here from data/random.h's sampler (splitmix64 Fisher-Yates keyed by
(seed, shuffle tag, epoch)) over the sorted ImageFolder, decoded with PIL. Here: timm VisionTransformer loads INIT, takes the same batches (normalised as vitrain), label
smoothing 0.1, clip 1, AdamW (torch, fused) with timm's no-decay groups (--optim muon: and
torch.optim.Muon for every 2-D weight but the classifier's, its Newton-Schulz iteration in float32
as vitrain's on the CPU), and the per-tensor max |diff| to vitrain's weights after each step is
printed. See README.md for the commands.

    python bench/accuracy/step_equivalence.py INIT_CKPT RUN_DIR TRAIN_DIR --batch 32 --width 128 --depth 4 --heads 4 --mlp 256
"""
import argparse
import os

import numpy as np
import torch
from PIL import Image
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_weight_decay

from audit_aug import folder_files  # same folder as this script

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


M64 = (1 << 64) - 1


def splitmix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def mix_key(parts):
    h = 0x243F6A8885A308D3
    for p in parts:
        h = splitmix64(h ^ splitmix64(p))
    return h


def permutation(n, key):
    """data/random.h permutation(): Fisher-Yates with Lemire's below()."""
    p = list(range(n))
    state = key
    for i in range(n - 1, 0, -1):
        r = splitmix64(state)
        state = (state + 1) & M64
        j = (r * (i + 1)) >> 64
        p[i], p[j] = p[j], p[i]
    return p


def folder(root):
    """Sorted-folder ImageFolder listing, as vitrain's (audit_aug.folder_files)."""
    _, files, labels = folder_files(root)
    return files, labels.tolist()


def float32_newton_schulz():
    """torch.optim.Muon's orthogonalisation with float32 in place of its bfloat16 (vitrain's CPU path)."""
    import torch.optim._muon as muon
    bf16 = muon._zeropower_via_newtonschulz

    def in_float32(grad, *args):
        saved = torch.Tensor.bfloat16
        torch.Tensor.bfloat16 = torch.Tensor.float
        try:
            return bf16(grad, *args)
        finally:
            torch.Tensor.bfloat16 = saved

    muon._zeropower_via_newtonschulz = in_float32


def main():
    p = argparse.ArgumentParser()
    p.add_argument("init")
    p.add_argument("run")
    p.add_argument("train_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.05, help="vitrain's optim.weight_decay (a large one makes the decay groups visible)")
    p.add_argument("--optim", default="adamw", choices=["adamw", "muon"], help="vitrain's optim.name")
    p.add_argument("--device", default="cpu", help="where the reference runs (cuda: against a vitrain run with run.device=cuda "
                   "train.precision=fp32; TF32 stays off for matmuls, as in vitrain)")
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(1)
    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=a.width, depth=a.depth, num_heads=a.heads,
                              mlp_ratio=a.mlp / a.width, num_classes=10, drop_path_rate=0.0)
    w0 = load_file(os.path.join(a.init, "model.safetensors"), device=str(dev))
    model.load_state_dict(w0, strict=True)
    model.to(dev)
    hidden = [p for n, p in model.named_parameters() if a.optim == "muon" and p.ndim == 2 and not n.startswith("head.")]
    groups = param_groups_weight_decay(model, a.wd, no_weight_decay_list=model.no_weight_decay())
    groups = [dict(g, params=[p for p in g["params"] if not any(p is h for h in hidden)]) for g in groups]
    opts = [torch.optim.AdamW(groups, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, fused=True)]
    if hidden:
        float32_newton_schulz()
        opts.append(torch.optim.Muon(hidden, lr=a.lr, weight_decay=a.wd, adjust_lr_fn="match_rms_adamw"))
    model.train()
    B = a.batch
    files, all_labels = folder(a.train_dir)
    order = permutation(len(files), mix_key([a.seed, 1, 0]))  # Stream::kShuffle = 1, epoch 0
    for s in range(a.steps):
        ids = order[s * B:(s + 1) * B]  # world size 1, rank 0
        raw = np.stack([np.asarray(Image.open(files[i]).convert("RGB")).transpose(2, 0, 1) for i in ids])
        labels = torch.tensor([all_labels[i] for i in ids], device=dev)
        x = ((torch.from_numpy(raw).float() / 255 - MEAN) / STD).to(dev)
        loss = F.cross_entropy(model(x), labels, label_smoothing=0.1)
        model.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for opt in opts:
            opt.step()
        ref = load_file(os.path.join(a.run, "checkpoints", f"step_{s + 1:08d}", "model.safetensors"), device=str(dev))
        diffs = {n: float((p.detach() - ref[n]).abs().max()) for n, p in model.named_parameters()}
        moved = {n: float((p.detach() - w0[n]).abs().max()) for n, p in model.named_parameters()}
        worst = max(diffs, key=diffs.get)
        print(f"step {s + 1}: loss {loss.item():.5f} grad_norm {norm.item():.4f}; max |timm - vitrain| "
              f"{diffs[worst]:.2e} ({worst}); update size max {max(moved.values()):.2e}, "
              f"min over tensors {min(moved.values()):.2e}")


if __name__ == "__main__":
    main()
