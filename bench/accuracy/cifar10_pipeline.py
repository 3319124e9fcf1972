"""CIFAR-10 time-to-accuracy: vitrain's two stages for several seeds, and the same recipe in PyTorch + timm.

For each seed, vit-train runs configs/cifar10/pretrain.yaml, then configs/cifar10/finetune.yaml
from its checkpoint, on the JPEG copy of CIFAR-10 (an ImageFolder with train/ and test/), one run
at a time on the GPU. Then (--reference) bench/accuracy/timm_cifar_recipe.py runs the same YAML
files in PyTorch + timm (DataLoader workers, timm's transforms, torch.compile). Every evaluation
carries the training time so far (evaluation left out), so the table gives, per run: the
accuracy after each stage, the training time of each stage, and the training time until the test
accuracy first reached 90% and 93% (pretraining time + fine-tuning time for points in the
fine-tune stage).

    python3 bench/accuracy/cifar10_pipeline.py --data DIR [--seeds 0,1,2] [--reference] \
        [--out OUT] [--metric accuracy|ema_accuracy] [--set section.key=value ...]

--set applies to both stages of both systems (e.g. --set train.epochs=20 for a quick look).
Prints a markdown table and writes OUT/results.json.

Ablations: --variant NAME:section.key=value,... (repeatable; a key of one stage only as
pretrain.section.key=value or finetune.section.key=value) runs vitrain once per variant and seed; with --parallel they all run
at once on the GPU, which leaves the accuracies as they are but makes the times meaningless.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRETRAIN, FINETUNE = "configs/cifar10/pretrain.yaml", "configs/cifar10/finetune.yaml"
TARGETS = (0.90, 0.93)


def evals_of(run_dir):
    lines = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [l for l in lines if l.get("split") == "eval"]


def time_to(points, target):
    """First training time at which the metric reached `target`; points: [(seconds, metric)] in order."""
    for seconds, value in points:
        if value is not None and value >= target:
            return seconds
    return None


def vitrain_seed(args, seed, out, variant=("", []), background=False):
    """Both stages of one seed (and variant); with `background`, a Popen of a shell running them."""
    name, pairs = variant
    common = ["--set", "data.dataset=image_folder", "--set", f"data.path={args.data}/train",
              "--set", f"data.eval_path={args.data}/test", "--set", f"run.seed={seed}",
              "--set", "checkpoint.resume=false", "--set", "logging.progress=lines",
              "--set", "logging.tensorboard=false"]
    for kv in args.set:
        common += ["--set", kv]
    tag = f"{name + '_' if name else ''}seed{seed}"
    commands = []
    for stage, config in (("pretrain", PRETRAIN), ("finetune", FINETUNE)):
        run_dir = out / tag / stage
        extra = ["--set", f"run.dir={run_dir}"]
        for kv in pairs:  # "pretrain.x.y=v" / "finetune.x.y=v": one stage; "x.y=v": both
            first = kv.split(".", 1)[0]
            if first in ("pretrain", "finetune"):
                extra += ["--set", kv.split(".", 1)[1]] if first == stage else []
            else:
                extra += ["--set", kv]
        if stage == "finetune":
            extra += ["--set", f"model.init_from={out / tag / 'pretrain'}"]
        commands.append((stage, run_dir, [args.vit_train, "--config", config] + common + extra))
    if background:
        script = " && ".join(" ".join(f"'{c}'" for c in cmd) + f" > '{out / f'{tag}_{stage}.log'}' 2>&1"
                             for stage, _, cmd in commands)
        return subprocess.Popen(["bash", "-c", script], cwd=ROOT, start_new_session=True)
    stages = {}
    for stage, run_dir, cmd in commands:
        start = time.time()
        with open(out / f"{tag}_{stage}.log", "w") as log:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        if proc.returncode != 0:
            sys.exit(f"vit-train {stage} ({tag}) failed; see {out / f'{tag}_{stage}.log'}")
        summary = json.loads((run_dir / "summary.json").read_text())
        stages[stage] = {"evals": evals_of(run_dir), "train_seconds": summary["train_seconds"],
                         "eval_seconds": summary["eval_seconds"], "wall_seconds": time.time() - start,
                         "summary": summary}
        print(f"vitrain {tag} {stage}: {summary}", flush=True)
    return stages


def collect(out, tag):
    stages = {}
    for stage in ("pretrain", "finetune"):
        run_dir = out / tag / stage
        if not (run_dir / "summary.json").exists():
            return None
        summary = json.loads((run_dir / "summary.json").read_text())
        stages[stage] = {"evals": evals_of(run_dir), "train_seconds": summary["train_seconds"], "summary": summary}
    return stages


def reference_seed(args, seed, out):
    cmd = [sys.executable, str(ROOT / "bench/accuracy/timm_cifar_recipe.py"), "--data", args.data,
           "--pretrain", str(ROOT / PRETRAIN), "--finetune", str(ROOT / FINETUNE), "--seed", str(seed)]
    for kv in args.set:
        cmd += ["--set", kv]
    start = time.time()
    with open(out / f"reference_seed{seed}.log", "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    (out / f"reference_seed{seed}.jsonl").write_text(proc.stdout)
    if proc.returncode != 0:
        sys.exit(f"the PyTorch reference (seed {seed}) failed; see {out / f'reference_seed{seed}.log'}")
    stages = {}
    for stage in ("pretrain", "finetune"):
        evals = [l for l in lines if l.get("stage") == stage]
        stages[stage] = {"evals": evals, "train_seconds": evals[-1]["train_seconds"] if evals else 0.0,
                         "wall_seconds": time.time() - start}
    print(f"reference seed {seed}: {lines[-1]}", flush=True)
    return stages


def row(system, seed, stages, metric):
    pre, fine = stages["pretrain"], stages["finetune"]
    points = [(e["train_seconds"], e.get(metric)) for e in pre["evals"]]
    points += [(pre["train_seconds"] + e["train_seconds"], e.get(metric)) for e in fine["evals"]]
    last = lambda s, key: s["evals"][-1].get(key) if s["evals"] else None
    return {"system": system, "seed": seed, "pretrain_accuracy": last(pre, metric),
            "finetune_accuracy": last(fine, metric), "finetune_flip_tta": last(fine, metric.replace(
                "accuracy", "flip_tta_accuracy")), "pretrain_seconds": pre["train_seconds"],
            "finetune_seconds": fine["train_seconds"], "total_seconds": pre["train_seconds"] + fine["train_seconds"],
            **{f"time_to_{round(100 * t)}": time_to(points, t) for t in TARGETS}}


def table(rows, metric):
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"
    sec = lambda v: "-" if v is None else f"{v:.1f} s"
    out = [f"| system | seed | pretrain {metric} | fine-tune {metric} | fine-tune + flip TTA | pretrain time | "
           f"fine-tune time | total | time to 90% | time to 93% |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['system']} | {r['seed']} | {pct(r['pretrain_accuracy'])} | {pct(r['finetune_accuracy'])} | "
                   f"{pct(r['finetune_flip_tta'])} | {sec(r['pretrain_seconds'])} | {sec(r['finetune_seconds'])} | "
                   f"{sec(r['total_seconds'])} | {sec(r['time_to_90'])} | {sec(r['time_to_93'])} |")
    for system in sorted({r["system"] for r in rows}):
        mine = [r for r in rows if r["system"] == system]
        if len(mine) > 1:
            acc = [r["finetune_accuracy"] for r in mine]
            tot = [r["total_seconds"] for r in mine]
            out.append(f"| {system} | mean of {len(mine)} | {pct(statistics.mean(r['pretrain_accuracy'] for r in mine))}"
                       f" | {pct(statistics.mean(acc))} (min {pct(min(acc))}) | | | | {sec(statistics.mean(tot))} | | |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the CIFAR-10 JPEG copy: a folder with train/ and test/")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--reference", action="store_true", help="also run the PyTorch + timm reference")
    p.add_argument("--reference-seeds", default="0")
    p.add_argument("--out", default="runs/bench_cifar10")
    p.add_argument("--metric", default="accuracy", choices=["accuracy", "ema_accuracy"])
    p.add_argument("--vit-train", default=str(ROOT / "build/vit-train"))
    p.add_argument("--set", action="append", default=[], help="section.key=value for both stages")
    p.add_argument("--variant", action="append", default=[], help="NAME:section.key=value,... (ablations)")
    p.add_argument("--parallel", action="store_true", help="run the variants at once (accuracy only)")
    args = p.parse_args()
    # A SIGTERM (timeout, scancel) ends this script as an exception does, so the vit-train it runs
    # goes with it (subprocess.run kills its child; the parallel jobs are killed below) instead of
    # running on and sharing the GPU with whatever is measured next.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args.data = os.path.abspath(args.data)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    seeds = [int(s) for s in args.seeds.split(",") if s]
    variants = [(v.split(":", 1)[0], [kv for kv in v.split(":", 1)[1].split(",") if kv] if ":" in v else [])
                for v in args.variant] or [("", [])]
    if args.parallel:
        jobs = [(v, s, vitrain_seed(args, s, out, v, background=True)) for v in variants for s in seeds]
        try:
            for _, _, job in jobs:
                job.wait()
        except BaseException:
            for _, _, job in jobs:
                if job.poll() is None:
                    os.killpg(job.pid, signal.SIGKILL)
            raise
        for v, s, job in jobs:
            tag = f"{v[0] + '_' if v[0] else ''}seed{s}"
            stages = collect(out, tag)
            if stages is None:
                print(f"{tag}: failed; see {out}/{tag}_*.log", flush=True)
                continue
            rows.append(row(f"vitrain {v[0]} (shared GPU)", s, stages, args.metric))
    else:
        for v in variants:
            for seed in seeds:
                rows.append(row(f"vitrain {v[0]}".strip(), seed, vitrain_seed(args, seed, out, v), args.metric))
    if args.reference:
        for seed in [int(s) for s in args.reference_seeds.split(",") if s]:
            rows.append(row("PyTorch + timm", seed, reference_seed(args, seed, out), args.metric))
    (out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows, args.metric))


if __name__ == "__main__":
    main()
