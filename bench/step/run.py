"""The training-step benchmark: vitrain against PyTorch, same work, same GPU, same run.

For each shape it runs vit-train (bench/step/configs/<shape>.yaml: synthetic data on the GPU,
full step with the fused optimiser) and the PyTorch reference (pytorch_ref.py: timm
VisionTransformer, eager and torch.compile; DDP under torchrun for several GPUs), then prints
one markdown table: img/s, step time, MFU against the measured 790 TFLOP/s and the 989 TFLOP/s
datasheet figure (bf16 dense, H100/H200), peak GPU memory, and vitrain / PyTorch ratios.

    python3 bench/step/run.py --gpus 1 [--shapes vit_b16,c32_w256] [--json out.json]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ["vit_b16", "vit_s16", "c32_w512", "c32_w256"]
PEAK_MEASURED, PEAK_DATASHEET = 790e12, 989e12
WARMUP_STEPS = 20  # skip the first log line (start-up, graph capture)


def sh(cmd, env=None, timeout=900):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        sys.stderr.write(f"FAILED: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n")
        return None
    return proc


def pytorch(shape, mode, gpus):
    script = str(ROOT / "bench/step/pytorch_ref.py")
    if gpus == 1:
        cmd = [sys.executable, script, "--shape", shape, "--mode", mode]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}", script,
               "--shape", shape, "--mode", mode]
    proc = sh(cmd)
    if proc is None:
        return None
    return json.loads([l for l in proc.stdout.splitlines() if l.startswith("{")][-1])


def vitrain(binary, shape, gpus, extra, graph=False, log_dir=None):
    config = ROOT / f"bench/step/configs/{shape}.yaml"
    run_dir = tempfile.mkdtemp(prefix=f"vitrain-bench-{shape}-")
    micro = int(re.search(r"micro_batch_size: (\d+)", config.read_text()).group(1))
    # One batch per rank resident on the GPU (the PyTorch reference holds one batch too), and a
    # data set that fills any number of GPUs.
    extra = [f"data.synthetic_train_size={micro * gpus}", f"data.synthetic_eval_size={32 * gpus}"] + list(extra)
    extra += [f"train.cuda_graph={'true' if graph else 'false'}"]
    args = [binary, "--config", str(config), "--set", f"run.dir={run_dir}"] + sum((["--set", e] for e in extra), [])
    dry = sh([binary, "--config", str(config), "--dry-run"])
    flops = float(re.search(r"training FLOPs per image \(3x forward\): ([0-9.e+]+)", dry.stdout).group(1))
    if gpus > 1:
        nccl_env = sum((["-x", k] for k in sorted(os.environ) if k.startswith("NCCL_")), [])  # every rank's NCCL
        args = ["mpirun", "--allow-run-as-root", "-np", str(gpus), "--bind-to", "none"] + nccl_env + args
    proc = sh(args)
    if log_dir and proc is not None:  # vit-train's own log: start-up, GEMM tuning, progress (sh shows a failure's)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        Path(log_dir, f"vitrain-{shape}-{gpus}gpu{'-graph' if graph else ''}.log").write_text(proc.stdout + proc.stderr)
    if proc is None:
        return None, flops
    lines = [json.loads(l) for l in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["split"] == "train" and l["step"] > WARMUP_STEPS]
    img_s = statistics.median(l["img_per_s"] for l in train)
    batch = micro * gpus
    return {"impl": "vitrain" + ("-nccl" if gpus > 1 else "") + ("-cudagraph" if graph else ""), "shape": shape, "gpus": gpus, "img_per_s": img_s,
            "step_ms": 1000 * batch / img_s, "peak_mem_gb": max(l.get("peak_mem_gb", 0) for l in train),
            "data_wait": statistics.median(l["data_wait"] for l in train)}, flops


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vit-train", default=str(ROOT / "build/vit-train"))
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--set", action="append", default=[], help="extra vit-train --set for every shape")
    p.add_argument("--graph", default="auto", choices=["auto", "on", "off"],
                   help="vitrain with train.cuda_graph: auto = both variants (the faster one makes the ratio)")
    p.add_argument("--json", help="write all results here")
    p.add_argument("--log", help="keep each vit-train run's output in this folder")
    a = p.parse_args()
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    results = []
    impossible = []
    rows = ["| shape | GPUs | impl | img/s | step ms | MFU (790) | MFU (989) | peak GB | vitrain / this |",
            "|---|---|---|---|---|---|---|---|---|"]
    for shape in a.shapes.split(","):
        variants = {"auto": [False, True], "on": [True], "off": [False]}[a.graph]
        mine = [vitrain(a.vit_train, shape, a.gpus, a.set, g, a.log) for g in variants]
        flops = mine[0][1]
        candidates = [m[0] for m in mine if m[0] is not None]
        ours = max(candidates, key=lambda r: r["img_per_s"]) if candidates else None
        refs = [pytorch(shape, m, a.gpus) for m in a.modes.split(",") if m != "none"]
        for r in [m[0] for m in mine] + refs:
            if r is None:
                continue
            r["mfu_790"] = r["img_per_s"] * flops / (PEAK_MEASURED * a.gpus)
            r["mfu_989"] = r["img_per_s"] * flops / (PEAK_DATASHEET * a.gpus)
            if r["mfu_989"] > 1.0:  # above the datasheet peak: the timing is wrong, not the kernels fast
                impossible.append(f"{shape} {r['impl']}: {r['img_per_s']:,.0f} img/s is "
                                  f"{100 * r['mfu_989']:.0f}% of the datasheet peak")
            ratio = f"{ours['img_per_s'] / r['img_per_s']:.2f}x" if ours and r["impl"].startswith("pytorch") else ""
            rows.append(f"| {shape} | {a.gpus} | {r['impl']} | {r['img_per_s']:,.0f} | {r['step_ms']:.1f} | "
                        f"{100 * r['mfu_790']:.1f}% | {100 * r['mfu_989']:.1f}% | {r['peak_mem_gb']:.2f} | {ratio} |")
            results.append(r)
        print("\n".join(rows[-len(refs) - len(mine):]), flush=True)
    print("\n".join(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    if impossible:
        sys.exit("impossible rates (check how they were timed):\n  " + "\n  ".join(impossible))


if __name__ == "__main__":
    main()
