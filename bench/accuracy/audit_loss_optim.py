"""Checks vitrain's loss, weight-decay groups, drop-path rates and initialisation against timm.

    python bench/accuracy/audit_loss_optim.py [--init RUN_DIR/checkpoints/latest]

- loss: trainer/trainer.cpp compute_loss (soft targets from BatchFinisher, then smoothing eps/K)
  vs timm Mixup's smoothed mixed targets + SoftTargetCrossEntropy, and vs
  LabelSmoothingCrossEntropy for unmixed batches, on the same logits / lam;
- weight decay: trainer/optimizer.cpp is_no_decay over the model's names (from the checkpoint
  when given, else timm's names) vs timm.optim.param_groups_weight_decay;
- drop path: model/vit.cpp's rate per block vs timm's VisionTransformer(drop_path_rate=0.1);
- init (with --init: a checkpoint of a 1-step lr=1e-30 run): per-tensor std vs timm's init.
"""
import argparse
import json
import os

import torch
from timm.data.mixup import mixup_target
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_weight_decay


def vitrain_loss(logits, labels, targets, eps):
    """trainer/trainer.cpp compute_loss, transcribed."""
    logp = torch.log_softmax(logits.float(), -1)
    K = logits.shape[1]
    nll = -(targets * logp).sum(-1) if targets is not None else -logp.gather(1, labels[:, None])[:, 0]
    if eps > 0:
        nll = (1 - eps) * nll - (eps / K) * logp.sum(-1)
    return nll.mean()


def vitrain_targets(labels, lam, K):
    """data/batch_ops.cpp BatchFinisher: one_hot * lam + one_hot reversed * (1 - lam) (no smoothing)."""
    oh = F.one_hot(labels, K).float()
    return oh * lam + oh.flip(0) * (1 - lam)


def is_no_decay(name):  # trainer/optimizer.cpp
    return name.endswith(".bias") or "norm" in name or name in ("cls_token", "pos_embed")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--init", help="checkpoint dir of vitrain (model.safetensors) to compare init statistics")
    a = p.parse_args()
    torch.manual_seed(0)
    K, B, eps = 10, 64, 0.1
    # --- loss
    mix = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=eps, num_classes=K)
    worst = 0.0
    for trial in range(20):
        logits = torch.randn(B, K) * 3
        labels = torch.randint(0, K, (B,))
        x = torch.randn(B, 3, 32, 32)
        _, timm_t = mix(x.clone(), labels)
        # recover lam from timm's targets (on = 1 - eps + eps/K, off = eps/K):
        # timm target row i = lam*s(oh_i) + (1-lam)*s(oh_rev_i); solve for lam on a row with different labels
        rows = (labels != labels.flip(0)).nonzero()[:, 0]
        i = int(rows[0])
        on, off = 1 - eps + eps / K, eps / K
        lam = float((timm_t[i, labels[i]] - off) / (on - off))
        assert torch.allclose(mixup_target(labels, K, lam, eps), timm_t, atol=1e-6)
        ref = SoftTargetCrossEntropy()(logits, timm_t)
        ours = vitrain_loss(logits, labels, vitrain_targets(labels, lam, K), eps)
        worst = max(worst, abs(float(ref - ours)))
    logits = torch.randn(B, K) * 3
    labels = torch.randint(0, K, (B,))
    d_plain = abs(float(LabelSmoothingCrossEntropy(eps)(logits, labels) - vitrain_loss(logits, labels, None, eps)))
    d_torch = abs(float(F.cross_entropy(logits, labels, label_smoothing=eps) - vitrain_loss(logits, labels, None, eps)))
    print(f"loss: mixed batches max |vitrain - timm SoftTargetCE| {worst:.2e}; unmixed vs "
          f"LabelSmoothingCE {d_plain:.2e}, vs F.cross_entropy(label_smoothing) {d_torch:.2e}")

    # --- weight decay groups
    model = VisionTransformer(img_size=32, patch_size=4, embed_dim=384, depth=6, num_heads=6, mlp_ratio=4,
                              num_classes=10, drop_path_rate=0.1)
    names = [n for n, _ in model.named_parameters()]
    shapes = dict((n, p.shape) for n, p in model.named_parameters())
    if a.init:
        from safetensors.torch import load_file
        w = load_file(os.path.join(a.init, "model.safetensors"))
        vit_names = list(w.keys())
        extra = sorted(set(vit_names) - set(names))
        missing = sorted(set(names) - set(vit_names))
        print(f"vitrain checkpoint names: {len(vit_names)}; not in timm: {extra}; timm-only: {missing}")
        for n in extra:
            shapes[n] = w[n].shape
        names = sorted(set(names) | set(vit_names))
    groups = param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())
    timm_nd = set()
    pid = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        if g["weight_decay"] == 0:
            timm_nd |= {pid[id(p)] for p in g["params"]}
    for n in names:  # names timm's model lacks (pre_logits.fc.*): timm's rule = 1-D or .bias
        if n not in pid and (len(shapes[n]) <= 1 or n.endswith(".bias")):
            timm_nd.add(n)
    ours_nd = {n for n in names if is_no_decay(n)}
    print(f"no-decay params: vitrain {len(ours_nd)}, timm {len(timm_nd)}; differ: {sorted(ours_nd ^ timm_nd)}")
    print(f"  decayed: {sorted(set(names) - ours_nd)[:4]} ... ({len(set(names) - ours_nd)} tensors)")

    # --- drop path
    timm_dp = [round(float(b.drop_path1.drop_prob), 6) if hasattr(b.drop_path1, "drop_prob") else 0.0
               for b in model.blocks]
    depth = 6
    ours_dp = [round(0.1 * i / (depth - 1), 6) for i in range(depth)]
    print(f"drop path per block: timm {timm_dp}, vitrain {ours_dp}")

    # --- init
    if a.init:
        ts = dict(model.named_parameters())
        rows = []
        for n in sorted(w):
            v = w[n].float()
            t = ts.get(n)
            rows.append((n, float(v.std()) if v.numel() > 1 else float(v), float(v.mean()),
                         float(t.detach().std()) if t is not None and t.numel() > 1 else float("nan")))
        bad = [r for r in rows if r[3] == r[3] and abs(r[1] - r[3]) > 0.15 * max(r[3], 1e-9) and r[3] > 1e-5]
        for n, s, m, ts_ in rows:
            if not n.startswith("blocks.") or n.startswith("blocks.0."):
                print(f"  init {n:32s} std {s:.5f} mean {m:+.5f}  timm std {ts_:.5f}")
        print(f"init: tensors whose std differs from timm's by > 15%: {[r[0] for r in bad]}")


if __name__ == "__main__":
    main()
