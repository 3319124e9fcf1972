"""The CIFAR-10 recipe of configs/cifar10/ in PyTorch + timm, run as a user would run it.

Both stages, as vitrain runs them:
  pretraining  timm VisionTransformer with vitrain's MLP head (pre_logits Linear D->D + tanh,
               then Linear D->K), the ImageFolder JPEGs through a DataLoader with worker
               processes: RandomCrop(32, padding) + RandomHorizontalFlip + timm's RandAugment
               (rand_augment_transform, the data mean as fill) + ToTensor + Normalize + timm's
               RandomErasing (pixel mode); timm's RepeatAugSampler for repeated augmentation;
               timm.data.Mixup + SoftTargetCrossEntropy; AdamW (fused) with timm's no-decay
               groups, or torch.optim.Muon for the hidden matrices with AdamW for the rest
               (optim.name: muon), warmup + cosine per step (vitrain's formula), clip at norm 1; timm's
               ModelEmaV3; bf16 autocast and torch.compile.
  fine-tuning  a new model at the fine-tune size, the pretrained weights (or their moving
               average) with timm's resample_abs_pos_embed, a zero-initialised linear head, the
               fine-tune stage's augmentation and optimiser (SGD or AdamW) from the same YAML.
Both read the recipe from vitrain's YAML files (--pretrain / --finetune, `base:` followed), so
the two systems train the same recipe. Evaluation after every epoch is timed apart from
training. Prints one JSON line per evaluation ({"stage", "epoch", "train_seconds", "accuracy",
"ema_accuracy"}) and a final {"final": ...} line.

    python3 bench/accuracy/timm_cifar_recipe.py --data DIR --pretrain configs/cifar10/pretrain.yaml \
        --finetune configs/cifar10/finetune.yaml [--seed 0] [--workers 14]
DIR holds train/<class>/*.jpg and test/<class>/*.jpg (the JPEG copy of CIFAR-10).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import yaml
from PIL import Image, ImageOps
from timm.data import Mixup
from timm.data import auto_augment
from timm.data.auto_augment import rand_augment_transform
from timm.data.distributed_sampler import RepeatAugSampler
from timm.data.random_erasing import RandomErasing
from timm.layers import resample_abs_pos_embed
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from timm.optim import param_groups_weight_decay
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from timm_reference import MlpHeadViT, lr_at  # noqa: E402  (vitrain's MLP head and schedule, in timm)


def _posterize(img, bits_to_keep, **_):
    """timm's posterize, keeping 0 bits as black (as torchvision and older Pillow do): Pillow 11 refuses
    bits 0, which timm's PosterizeIncreasing asks for at magnitude 10 (reached with magnitude noise)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


for _name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
    auto_augment.NAME_TO_OP[_name] = _posterize


def load_recipe(path):
    """A vitrain YAML file with its `base:` chain merged (the child wins, key by key)."""
    with open(path) as f:
        tree = yaml.safe_load(f) or {}
    base = tree.pop("base", None)
    if base is None:
        return tree
    merged = load_recipe(os.path.join(os.path.dirname(path), base))
    for section, keys in tree.items():
        merged.setdefault(section, {}).update(keys or {})
    return merged


def get(recipe, key, default):
    section, name = key.split(".")
    return recipe.get(section, {}).get(name, default)


def train_transform(recipe, size):
    """vitrain's order (data/augment.h): crop + flip at the stored 32 px, resize, RandAugment, normalise, erase."""
    mean, std = get(recipe, "data.mean", [0.4914, 0.4822, 0.4465]), get(recipe, "data.std", [0.2470, 0.2435, 0.2616])
    steps = []
    if get(recipe, "data.train_crop", "pad_crop") == "pad_crop":
        steps.append(transforms.RandomCrop(32, padding=get(recipe, "data.crop_padding", 4)))
    if get(recipe, "data.hflip", True):
        steps.append(transforms.RandomHorizontalFlip())
    if size != 32:
        bicubic = get(recipe, "data.resize_interpolation", "bilinear") == "bicubic"
        steps.append(transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC if bicubic
                                       else transforms.InterpolationMode.BILINEAR))
    ra = str(get(recipe, "data.rand_augment", "none"))
    if ra != "none":
        hparams = dict(translate_const=int(size * 0.45), img_mean=tuple(min(255, round(255 * m)) for m in mean),
                       interpolation=Image.BILINEAR)
        steps.append(rand_augment_transform(ra, hparams))
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    reprob = get(recipe, "data.random_erase_prob", 0.0)
    if reprob > 0:
        steps.append(RandomErasing(reprob, mode="pixel", device="cpu"))
    return transforms.Compose(steps)


def eval_transform(recipe, size):
    mean, std = get(recipe, "data.mean", [0.4914, 0.4822, 0.4465]), get(recipe, "data.std", [0.2470, 0.2435, 0.2616])
    steps = [] if size == 32 else [transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC)]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])


def build_model(recipe, num_classes, size, head):
    m = recipe["model"]
    vit = VisionTransformer(img_size=size, patch_size=m["patch_size"], embed_dim=m["width"], depth=m["depth"],
                            num_heads=m["num_heads"], mlp_ratio=m["mlp_dim"] / m["width"], num_classes=num_classes,
                            drop_path_rate=m.get("drop_path", 0.0))
    return MlpHeadViT(vit, num_classes) if head == "mlp" else vit


def run_stage(name, recipe, model, data, args, device, log):
    size = recipe["model"]["image_size"]
    train_set = datasets.ImageFolder(os.path.join(data, "train"), train_transform(recipe, size))
    test_set = datasets.ImageFolder(os.path.join(data, "test"), eval_transform(recipe, size))
    batch = get(recipe, "train.micro_batch_size", 512)
    repeats = get(recipe, "data.repeated_augment", 1)
    epochs = get(recipe, "train.epochs", 10)
    # Each sample k times per epoch, as vitrain's data.repeated_augment (timm's default keeps N per epoch).
    sampler = RepeatAugSampler(train_set, num_replicas=1, rank=0, shuffle=True, num_repeats=repeats,
                               selected_ratio=1.0 / repeats) if repeats > 1 else None
    loader = DataLoader(train_set, batch_size=batch, shuffle=sampler is None, sampler=sampler, drop_last=True,
                        num_workers=args.workers, pin_memory=device.type == "cuda", persistent_workers=True,
                        prefetch_factor=4)
    test_loader = DataLoader(test_set, batch_size=1000, num_workers=args.workers, pin_memory=device.type == "cuda")
    num_classes = len(train_set.classes)

    o = recipe.get("optim", {})
    wd = o.get("weight_decay", 0.05)
    algorithm = o.get("name", "adamw")
    # optim.name: muon: torch.optim.Muon (Moonlight's RMS matching, as vitrain) for every 2-D weight
    # but the classifier's, AdamW with timm's groups for the rest.
    hidden = [p for n, p in model.named_parameters() if algorithm == "muon" and p.ndim == 2 and not n.startswith("head.")]
    groups = param_groups_weight_decay(model, wd, no_weight_decay_list=getattr(model, "no_weight_decay", set)())
    groups = [dict(g, params=[p for p in g["params"] if not any(p is h for h in hidden)]) for g in groups]
    if algorithm == "sgd":
        opts = [torch.optim.SGD(groups, lr=o["lr"], momentum=o.get("momentum", 0.9), fused=True)]
    else:
        opts = [torch.optim.AdamW(groups, lr=o["lr"], betas=(o.get("beta1", 0.9), o.get("beta2", 0.999)), fused=True)]
    if hidden:
        opts.append(torch.optim.Muon(hidden, lr=o["lr"], weight_decay=wd, momentum=o.get("muon_momentum", 0.95),
                                     nesterov=o.get("muon_nesterov", True), ns_steps=o.get("muon_ns_steps", 5),
                                     adjust_lr_fn="match_rms_adamw"))
    decay = get(recipe, "train.ema_decay", 0.0)
    ema = ModelEmaV3(model, decay=decay) if decay > 0 else None
    net = torch.compile(model) if device.type == "cuda" else model
    smoothing = get(recipe, "train.label_smoothing", 0.0)
    mixup, cutmix = get(recipe, "data.mixup_alpha", 0.0), get(recipe, "data.cutmix_alpha", 0.0)
    mixer = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=smoothing, num_classes=num_classes) \
        if mixup > 0 or cutmix > 0 else None
    criterion = SoftTargetCrossEntropy() if mixer else (
        LabelSmoothingCrossEntropy(smoothing) if smoothing > 0 else nn.CrossEntropyLoss())
    steps_per_epoch = len(loader)
    total = steps_per_epoch * epochs
    s = recipe.get("schedule", {})
    warmup = s["warmup_steps"] if s.get("warmup_steps", -1) >= 0 else round(s.get("warmup_fraction", 0.05) * total)
    clip = o.get("clip_grad_norm", 1.0)

    @torch.no_grad()
    def evaluate(m):
        m.eval()
        correct = 0
        for x, y in test_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                correct += (m(x).argmax(-1) == y).sum().item()
        m.train()
        return correct / len(test_set)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step, train_s = 0, 0.0
    result = {}
    for epoch in range(epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        sync()
        t0 = time.time()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mixer is not None:
                x, y = mixer(x, y)
            for g in (g for opt in opts for g in opt.param_groups):
                g["lr"] = lr_at(step, total, warmup, o["lr"], s.get("min_lr", 0.0))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = criterion(net(x).float(), y)
            model.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            for opt in opts:
                opt.step()
            if ema is not None:
                ema.update(model, step)
            step += 1
        sync()
        train_s += time.time() - t0
        result = {"stage": name, "epoch": epoch + 1, "train_seconds": round(train_s, 2),
                  "accuracy": evaluate(net), "loss": round(loss.item(), 4)}
        if ema is not None:
            result["ema_accuracy"] = evaluate(ema.module)
        log(result)
    return result, ema


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder with train/ and test/ ImageFolders")
    p.add_argument("--pretrain", required=True, help="vitrain's pretraining YAML")
    p.add_argument("--finetune", default="", help="vitrain's fine-tuning YAML (empty: pretraining only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    p.add_argument("--set", action="append", default=[], help="section.key=value over both YAML files")
    p.add_argument("--device", default="cuda", help="cuda (bf16 autocast, torch.compile) or cpu (a smoke test)")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device(a.device)

    def log(d):
        print(json.dumps(d), flush=True)

    def with_sets(recipe):
        for kv in a.set:
            key, value = kv.split("=", 1)
            section, name = key.split(".")
            recipe.setdefault(section, {})[name] = yaml.safe_load(value)
        return recipe

    pre = with_sets(load_recipe(a.pretrain))
    classes = len(datasets.ImageFolder(os.path.join(a.data, "test")).classes)
    model = build_model(pre, classes, pre["model"]["image_size"], pre["model"].get("head", "mlp")).to(device)
    pre_result, ema = run_stage("pretrain", pre, model, a.data, a, device, log)
    final = {"pretrain": pre_result}
    if a.finetune:
        fine = with_sets(load_recipe(a.finetune))
        source = ema.module if ema is not None and fine["model"].get("init_from_ema", False) else model
        weights = source.vit.state_dict() if isinstance(source, MlpHeadViT) else source.state_dict()
        size = fine["model"]["image_size"]
        tuned = build_model(fine, classes, size, "linear")
        grid = size // fine["model"]["patch_size"]
        weights = {k: v for k, v in weights.items() if not k.startswith("head")}
        weights["pos_embed"] = resample_abs_pos_embed(weights["pos_embed"], (grid, grid), num_prefix_tokens=1,
                                                      interpolation=fine["model"].get("pos_embed_interpolation",
                                                                                      "bicubic"))
        missing = tuned.load_state_dict(weights, strict=False).missing_keys
        assert sorted(missing) == ["head.bias", "head.weight"], missing
        nn.init.zeros_(tuned.head.weight)
        nn.init.zeros_(tuned.head.bias)
        final["finetune"], _ = run_stage("finetune", fine, tuned.to(device), a.data, a, device, log)
    log({"final": final})


if __name__ == "__main__":
    main()
