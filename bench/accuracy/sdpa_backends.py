"""Forward and backward error of each scaled_dot_product_attention kernel against float64 math.

The inputs are laid out as vitrain's and timm's attention makes them: one qkv projection
[B, N, 3, H, Dh] permuted to q, k, v views [B, H, N, Dh] (not contiguous), bf16. For each shape
(CIFAR-10 recipe, ViT-S/16, ViT-B/16 at 224 px) and each backend (default = ATen's own choice,
then flash, efficient, cudnn, math) it prints the relative error ||x - ref|| / ||ref|| of the
output and of dq, dk, dv, and names the kernels the default choice ran.

    python3 bench/accuracy/sdpa_backends.py [--json OUT]
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = {  # name: (batch, heads, tokens, head dim)
    "cifar_w384": (512, 6, 65, 64),
    "vit_s16": (128, 6, 197, 64),
    "vit_b16": (128, 12, 197, 64),
}
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}


def inputs(b, h, n, d, scale, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    qkv = (torch.randn(b, n, 3, h, d, device="cuda", generator=g) * scale).to(torch.bfloat16)
    grad = torch.randn(b, h, n, d, device="cuda", generator=g).to(torch.bfloat16)
    return qkv, grad


def run(qkv, grad, backend):
    qkv = qkv.detach().clone().requires_grad_(True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    ctx = sdpa_kernel([BACKENDS[backend]]) if backend in BACKENDS else torch.enable_grad()
    with ctx:
        out = F.scaled_dot_product_attention(q, k, v)
        out.backward(grad)
    dq, dk, dv = qkv.grad.permute(2, 0, 3, 1, 4).unbind(0)
    return [out.detach(), dq, dk, dv]


def reference(qkv, grad):
    qkv = qkv.detach().double().requires_grad_(True)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    attn = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    out = attn @ v
    out.backward(grad.double())
    dq, dk, dv = qkv.grad.permute(2, 0, 3, 1, 4).unbind(0)
    return [out.detach(), dq, dk, dv]


def default_kernels(qkv, grad):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run(qkv, grad, "default")
        torch.cuda.synchronize()
    names = {e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA}
    keys = ("sdpa", "flash", "fmha", "attention", "cudnn")
    return sorted(n[:90] for n in names if any(k in n.lower() for k in keys))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json")
    p.add_argument("--scales", default="0.5,2,4", help="std of the q/k/v entries (larger: peakier softmax)")
    a = p.parse_args()
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    rows = []
    for name, (b, h, n, d) in SHAPES.items():
        for scale in (float(s) for s in a.scales.split(",")):
            qkv, grad = inputs(b, h, n, d, scale, seed=0)
            ref = reference(qkv, grad)
            for backend in ["default", *BACKENDS]:
                try:
                    got = run(qkv, grad, backend)
                except RuntimeError as e:
                    print(f"{name:11s} scale {scale:3.1f} {backend:9s} unavailable: {str(e).splitlines()[0][:80]}")
                    continue
                err = [float((x.double() - r).norm() / r.norm()) for x, r in zip(got, ref)]
                finite = all(bool(torch.isfinite(x).all()) for x in got)
                rows.append({"shape": name, "scale": scale, "backend": backend, "finite": finite,
                             "rel_err": dict(zip(["out", "dq", "dk", "dv"], err))})
                print(f"{name:11s} scale {scale:3.1f} {backend:9s} rel err out {err[0]:.2e} dq {err[1]:.2e} "
                      f"dk {err[2]:.2e} dv {err[3]:.2e}{'' if finite else '  NON-FINITE'}")
            print(f"{name:11s} default kernels: {default_kernels(qkv, grad)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
