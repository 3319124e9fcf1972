"""PyTorch reference for the training-step benchmark: the same work as vitrain's step.

timm VisionTransformer (token pooling, the shape given), bf16 autocast, fused AdamW, label
smoothing 0.1, clip at global norm 1, synthetic images and labels already on the GPU; eager or
torch.compile; DDP (NCCL, 25 MB buckets, gradient_as_bucket_view) when started by torchrun.
Prints one JSON line: img/s (whole job), step time, peak GPU memory.

    python bench/step/pytorch_ref.py --shape vit_b16 --mode compile
    torchrun --nproc-per-node 4 bench/step/pytorch_ref.py --shape vit_b16 --mode eager
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

# name: (image, patch, width, depth, heads, mlp, batch per GPU, classes)
SHAPES = {
    "vit_b16": (224, 16, 768, 12, 12, 3072, 256, 1000),
    "vit_s16": (224, 16, 384, 12, 6, 1536, 256, 1000),
    "c32_w512": (32, 4, 512, 6, 8, 2048, 512, 10),
    "c32_w256": (32, 4, 256, 7, 4, 512, 128, 10),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=SHAPES, required=True)
    p.add_argument("--mode", choices=["eager", "compile"], default="eager")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--profile", action="store_true", help="print the top GPU kernels of 5 profiled steps")
    a = p.parse_args()
    image, patch, width, depth, heads, mlp, batch, classes = SHAPES[a.shape]

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    if world > 1:
        torch.distributed.init_process_group("nccl")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    model = VisionTransformer(img_size=image, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads,
                              mlp_ratio=mlp / width, num_classes=classes).cuda()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, fused=True)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local], bucket_cap_mb=25,
                                                        gradient_as_bucket_view=True)
    x = torch.randn(batch, 3, image, image, device="cuda")
    y = torch.randint(0, classes, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(net(x).float(), y, label_smoothing=0.1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if a.mode == "compile":
        step = torch.compile(step)
    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    if a.profile and rank == 0:
        profile(step)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if rank == 0:
        print(json.dumps({"impl": f"pytorch-{a.mode}" + ("-ddp" if world > 1 else ""), "shape": a.shape,
                          "gpus": world, "img_per_s": batch * world * a.steps / dt, "step_ms": 1000 * dt / a.steps,
                          "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30,
                          "gpu": torch.cuda.get_device_name()}), flush=True)
    if world > 1:
        torch.distributed.destroy_process_group()


def profile(step, steps=5):
    """Top GPU kernels over `steps` steps, in the format of vit-train's logging.profile_step."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    wall_us = (time.perf_counter() - t0) * 1e6
    by_name = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            t, n = by_name.get(e.name, (0.0, 0))
            by_name[e.name] = (t + e.device_time, n + 1)
    gpu_us = sum(t for t, _ in by_name.values())
    print(f"profile: wall per step {wall_us / steps / 1000:.1f} ms, GPU busy {100 * gpu_us / wall_us:.0f}%, "
          f"{sum(n for _, n in by_name.values()) // steps} GPU activities per step")
    for name, (t, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:20]:
        print(f"  {100 * t / gpu_us:.1f}% {t / steps / 1000:.2f} ms/step x{n // steps}  {name[:110]}")


if __name__ == "__main__":
    main()
