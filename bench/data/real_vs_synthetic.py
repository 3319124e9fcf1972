"""CIFAR-10 training throughput with real data against synthetic data, same model, same GPU.

Runs configs/cifar10/pretrain.yaml twice for a few hundred steps: once on the CIFAR-10 JPEG
copy (ImageFolder decoded once, kept on the GPU, augmented there: pad-crop, flip,
mixup/cutmix) and once on the synthetic set at the same resolution with the same augmentation,
and prints both img/s and the ratio (goal >= 95%).

    python3 bench/data/real_vs_synthetic.py --cifar-dir /tmp/cifar10   # holds train/ and test/
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def img_per_s(binary, extra, steps):
    run_dir = tempfile.mkdtemp(prefix="vitrain-data-bench-")
    cmd = [binary, "--config", str(ROOT / "configs/cifar10/pretrain.yaml"), "--set", f"run.dir={run_dir}",
           "--set", f"train.steps={steps}", "--set", "logging.every_steps=20", "--set", "logging.tensorboard=false",
           "--set", "train.eval_every_steps=1000000", "--set", "checkpoint.resume=false"]
    for e in extra:
        cmd += ["--set", e]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"vit-train failed:\n{proc.stderr[-3000:]}")
    lines = [json.loads(l) for l in Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if l["split"] == "train" and l["step"] > 40]
    return statistics.median(l["img_per_s"] for l in train), statistics.median(l["data_wait"] for l in train)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cifar-dir", required=True, help="folder with train/ and test/ (the JPEG copy, extracted)")
    p.add_argument("--vit-train", default=str(ROOT / "build/vit-train"))
    p.add_argument("--steps", type=int, default=300)
    a = p.parse_args()
    real = img_per_s(a.vit_train, ["data.dataset=image_folder", f"data.path={a.cifar_dir}/train",
                                   f"data.eval_path={a.cifar_dir}/test"], a.steps)
    synthetic = img_per_s(a.vit_train, ["data.dataset=synthetic", "data.synthetic_image_size=32",
                                        "data.synthetic_train_size=50000", "data.synthetic_eval_size=10000"], a.steps)
    print(f"real CIFAR-10: {real[0]:,.0f} img/s (data wait {100 * real[1]:.1f}%)")
    print(f"synthetic:     {synthetic[0]:,.0f} img/s (data wait {100 * synthetic[1]:.1f}%)")
    print(f"real / synthetic: {100 * real[0] / synthetic[0]:.1f}% (goal >= 95%)")


if __name__ == "__main__":
    main()
