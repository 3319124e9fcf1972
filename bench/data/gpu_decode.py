"""Input pipeline at GPU speed: JPEG decode on the GPU against the CPU, on ImageNet-like tar shards.

Writes ImageNet-like WebDataset shards ({key}.jpg + {key}.cls; sizes and aspect ratios like
ImageNet's, photo-like content, JPEG quality 90, 4:2:0) into --work (reused when its manifest
matches), then measures and prints one markdown table for docs/benchmarks.md:
  - the nvJPEG batched decode ceiling and vitrain's streaming loader (GPU and CPU decode, train and
    eval transforms) with build/bench/data/bench_gpu_decode;
  - DALI's webdataset reader + mixed decoder + random-resized crop, when nvidia.dali imports;
  - ViT-B/16 and ViT-S/16 training throughput (bench/step/configs) on synthetic data, on the shards
    with data.decode=gpu (1 reader + the decode thread) and with data.decode=cpu (--cpu-workers).
Raw results and the table also go to --out (default WORK/results.json).

    python3 bench/data/gpu_decode.py                      # everything, about 5 minutes on one H200
    python3 bench/data/gpu_decode.py --skip-train         # decode rows only
"""
import argparse
import datetime
import io
import json
import multiprocessing
import os
import signal
import statistics
import sys
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, NCCL_NVLS_ENABLE="0")
COMMON = [(500, 375, 0.33), (500, 333, 0.12), (375, 500, 0.09), (333, 500, 0.06)]  # ~60% together


def make_sample(args):
    """One JPEG (bytes, w, h) and its label, deterministic from (seed, key)."""
    import numpy as np  # here so that --help works without numpy and pillow
    from PIL import Image, ImageDraw
    seed, key, classes = args
    rng = np.random.default_rng([seed, key])
    u = rng.random()
    for w, h, p in COMMON:
        if u < p:
            break
        u -= p
    else:
        aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.8))))  # width / height
        if rng.random() < 0.05 / 0.4:  # 5% of all images: longer side up to 1000
            long = rng.uniform(500, 1000)
            w, h = (long, long / aspect) if aspect >= 1 else (long * aspect, long)
        else:
            short = rng.uniform(200, 500)
            w, h = (short * aspect, short) if aspect >= 1 else (short, short / aspect)
        w, h = max(16, int(round(w))), max(16, int(round(h)))
    s = int(rng.integers(8, 33))
    low = Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8))
    img = low.resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        x0, x1 = sorted(rng.integers(0, w, 2).tolist())
        y0, y1 = sorted(rng.integers(0, h, 2).tolist())
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x1, y1], fill=tuple(rng.integers(0, 256, 3).tolist()))
    tw, th = max(2, w // 4), max(2, h // 4)  # fine texture, so that JPEGs are photo-sized (noise alone is too small)
    tex = Image.fromarray(rng.integers(0, 256, (th, tw, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    px = np.asarray(img, dtype=np.float32) + rng.uniform(0.2, 0.6) * (np.asarray(tex, dtype=np.float32) - 128)
    px += rng.normal(0.0, 6.0, (h, w, 3)).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(px, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90, subsampling=2,
                                                               progressive=False, optimize=False)
    return buf.getvalue(), w, h, int(rng.integers(0, classes))


def write_shards(a):
    """Writes train-NNNNN.tar into a.work unless a manifest with the same parameters is there; returns it."""
    work = Path(a.work)
    params = {"shards": a.shards, "per_shard": a.per_shard, "classes": a.classes, "seed": a.seed, "version": 2}
    names = [work / f"train-{i:05d}.tar" for i in range(a.shards)]
    manifest = work / "manifest.json"
    if manifest.exists() and all(n.exists() for n in names):
        m = json.loads(manifest.read_text())
        if m.get("params") == params:
            print(f"reusing shards in {work}")
            return m
    work.mkdir(parents=True, exist_ok=True)
    t0, sizes, dims = time.time(), [], []
    jobs = [(a.seed, k, a.classes) for k in range(a.shards * a.per_shard)]
    with multiprocessing.Pool(os.cpu_count()) as pool:
        it = pool.imap(make_sample, jobs, chunksize=16)
        for shard, name in enumerate(names):
            with tarfile.open(name, "w") as tar:
                for k in range(shard * a.per_shard, (shard + 1) * a.per_shard):
                    jpg, w, h, label = next(it)
                    for ext, data in (("jpg", jpg), ("cls", str(label).encode())):
                        info = tarfile.TarInfo(f"{k:06d}.{ext}")
                        info.size, info.mtime = len(data), 0
                        tar.addfile(info, io.BytesIO(data))
                    sizes.append(len(jpg))
                    dims.append((w, h))
    m = {"params": params, "images": len(sizes), "mean_kb": sum(sizes) / len(sizes) / 1024,
         "mean_w": statistics.mean(d[0] for d in dims), "mean_h": statistics.mean(d[1] for d in dims),
         "total_mb": sum(sizes) / 2**20}
    manifest.write_text(json.dumps(m, indent=1))
    print(f"wrote {a.shards} shards, {m['images']} images in {time.time() - t0:.0f} s")
    return m


def write_folder(a):
    """The same images as an ImageFolder (WORK/folder/<class>/<key>.jpg), extracted from the shards once."""
    root = Path(a.work) / "folder"
    done = root / ".complete"
    if not done.exists():
        for i in range(a.shards):
            with tarfile.open(Path(a.work) / f"train-{i:05d}.tar") as tar:
                members = {m.name: m for m in tar.getmembers()}
                for name, m in members.items():
                    if name.endswith(".jpg"):
                        label = tar.extractfile(members[name[:-4] + ".cls"]).read().decode().strip()
                        (root / f"{int(label):04d}").mkdir(parents=True, exist_ok=True)
                        (root / f"{int(label):04d}" / name).write_bytes(tar.extractfile(m).read())
        done.write_text("ok")
    return str(root)


def run_proc(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    except OSError as e:  # binary not built
        return subprocess.CompletedProcess(cmd, 127, "", str(e))


def run_tool(a, pattern, *args):
    """One bench_gpu_decode run; its last JSON stdout line, or None when it failed."""
    cmd = [a.bench_tool, "--shards", pattern, "--batch", "256", "--seconds", str(a.seconds), *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    proc = run_proc(cmd)
    if proc.returncode == 0:
        for line in reversed(proc.stdout.splitlines()):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            print("  ->", json.dumps(result), flush=True)
            return result
    print(f"  failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return None


def train(a, model, extra):
    """Median img/s and data wait of one vit-train run (steps > 40), or None when it failed."""
    run_dir = tempfile.mkdtemp(prefix="vitrain-gpu-decode-")
    cmd = [a.vit_train, "--config", str(ROOT / f"bench/step/configs/vit_{model}.yaml")]
    for s in [f"run.dir={run_dir}", f"train.steps={a.steps}", "logging.every_steps=20", "checkpoint.resume=false",
              "train.cuda_graph=true", "train.eval_every_steps=1000000", "data.train_crop=random_resized_crop",
              "data.hflip=true", *extra]:
        cmd += ["--set", s]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    proc = run_proc(cmd)
    metrics = Path(run_dir, "metrics.jsonl")
    if proc.returncode != 0 or not metrics.exists():
        print(f"  failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        return None
    lines = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
    lines = [l for l in lines if l.get("split") == "train" and l["step"] > 40]
    if not lines:
        return None
    result = {"img_per_s": statistics.median(l["img_per_s"] for l in lines),
              "data_wait": statistics.median(l["data_wait"] for l in lines)}
    print(f"  -> {json.dumps(result)} ({time.time() - t0:.0f} s)", flush=True)
    return result


def dali(files, seconds):
    """DALI webdataset reader + mixed (nvJPEG) decode + random-resized crop + flip + normalise, img/s."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError:
        print("DALI is not installed (nvidia.dali does not import): its row is not measured")
        return None

    @pipeline_def(batch_size=256, num_threads=2, device_id=0)
    def pipe():
        jpg, cls = fn.readers.webdataset(paths=[str(f) for f in files], ext=["jpg", "cls"], name="reader")
        img = fn.decoders.image(jpg, device="mixed", output_type=types.RGB)
        img = fn.random_resized_crop(img, size=224)
        img = fn.crop_mirror_normalize(img, dtype=types.FLOAT, output_layout="CHW", mirror=fn.random.coin_flip(),
                                       mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
                                       std=[0.229 * 255, 0.224 * 255, 0.225 * 255])
        return img, cls

    try:
        p = pipe()
        p.build()
        for _ in range(10):
            p.run()
        n, t0 = 0, time.time()
        while time.time() - t0 < seconds:
            out = p.run()
            n += 256
        out[0].as_cpu()  # waits for the last batch
        return {"img_per_s": n / (time.time() - t0), "images": n}
    except Exception as e:  # noqa: BLE001 -- a DALI failure must not lose the other rows
        print(f"DALI failed: {e}")
        return None


def gpu_name():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, check=True).stdout.splitlines()[0].strip()
    except (OSError, subprocess.CalledProcessError, IndexError):
        try:
            import torch
            return torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001
            return "unknown GPU"


def commit(a):
    if a.commit:
        return a.commit
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/vitrain-jpeg-bench", help="where the shards and results go")
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bench-tool", default=str(ROOT / "build/bench/data/bench_gpu_decode"))
    p.add_argument("--vit-train", default=str(ROOT / "build/vit-train"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--cpu-workers", type=int, default=14,
                   help="data.num_workers for the CPU-decode training rows (0: leave them out)")
    p.add_argument("--seconds", type=float, default=8, help="measuring time per decode/loader row")
    p.add_argument("--skip-train", action="store_true", help="decode and loader rows only")
    p.add_argument("--train-only", action="store_true", help="training rows only")
    p.add_argument("--commit", default="", help="commit to print when git is not available")
    p.add_argument("--models", default="b16,s16")
    p.add_argument("--out", default="", help="JSON results (default WORK/results.json)")
    a = p.parse_args()
    # A SIGTERM (timeout) ends this script as an exception does: subprocess.run then kills the
    # vit-train or bench_gpu_decode it waits for instead of leaving it on the GPU.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    m = write_shards(a)
    pattern = f"{a.work}/train-{{00000..{a.shards - 1:05d}}}.tar"
    print(f"shards: {pattern}, mean JPEG {m['mean_kb']:.1f} KB, mean {m['mean_w']:.0f}x{m['mean_h']:.0f}")

    folder = write_folder(a)
    res = {"ceiling": None if a.train_only else run_tool(a, pattern, "--mode", "ceiling")}
    loader = [("gpu", "train", 1, "shards"), ("gpu", "train", 2, "shards"), ("gpu", "eval", 2, "shards"),
              ("gpu", "train", 1, "folder"), ("gpu", "eval", 2, "folder"), ("cpu", "train", 1, "shards"),
              ("cpu", "train", 2, "shards")]
    for dec, split, w, src in loader:
        where = ["--folder", folder] if src == "folder" else []
        res[f"loader_{dec}_{split}_w{w}_{src}"] = None if a.train_only else run_tool(
            a, pattern, "--mode", "loader", "--decode", dec, "--workers", w, "--size", 224, "--split", split, *where)
    res["dali"] = None if a.train_only else dali([Path(a.work) / f"train-{i:05d}.tar" for i in range(a.shards)], a.seconds)
    models = [] if a.skip_train else [x.strip() for x in a.models.split(",") if x.strip()]
    shard_set = ["data.dataset=tar_shards", f"data.path={pattern}", f"data.eval_path={pattern}",
                 "data.num_classes=1000"]
    for model in models:
        res[f"{model}_synthetic"] = train(a, model, [])
        res[f"{model}_gpu"] = train(a, model, shard_set + ["data.decode=gpu", "data.num_workers=1"])
        res[f"{model}_cpu"] = (train(a, model, shard_set + ["data.decode=cpu", f"data.num_workers={a.cpu_workers}"])
                               if a.cpu_workers > 0 else None)

    def row(what, threads, r, base, wait=True):
        if r is None:
            return f"| {what} | {threads} | not measured / failed | | |"
        ratio = f"{100 * r['img_per_s'] / base['img_per_s']:.0f}%" if base else ""
        dw = f"{100 * r['data_wait']:.1f}%" if wait and "data_wait" in r else ""
        return f"| {what} | {threads} | {r['img_per_s']:,.0f} | {ratio} | {dw} |"

    ceil = res["ceiling"]
    rows = ["| what | CPU threads | img/s | vs ceiling / vs synthetic | data wait |", "|---|---|---:|---:|---:|",
            row("nvJPEG batched decode ceiling (full images, batch 256)", "1", ceil, None)]
    for dec, split, w, src in loader:
        threads = f"{w} reader{'s' * (w > 1)} + 1 decode" if dec == "gpu" else f"{w} (decode in the workers)"
        what = f"vitrain loader, {'tar shards' if src == 'shards' else 'ImageFolder'}, {dec} decode, {split} transforms"
        rows.append(row(what, threads, res[f"loader_{dec}_{split}_w{w}_{src}"], ceil))
    rows.append(row("DALI webdataset + mixed decode + random-resized crop, 224 px", "2", res["dali"], ceil))
    for model in models:
        name, syn = f"ViT-{model.upper()[0]}/{model[1:]}", res[f"{model}_synthetic"]
        rows.append(row(f"{name} training, synthetic (GPU augmentation)", "-", syn, None))
        rows.append(row(f"{name} training, shards, GPU decode", "1 reader + 1 decode", res[f"{model}_gpu"], syn))
        rows.append(row(f"{name} training, shards, CPU decode", str(a.cpu_workers), res[f"{model}_cpu"], syn))
    backend = (ceil or {}).get("backend", "nvJPEG backend unknown")
    header = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {gpu_name()}, commit {commit(a)}, "
              f"{backend}; {m['images']} images in {a.shards} shards, mean JPEG {m['mean_kb']:.0f} KB, "
              f"mean {m['mean_w']:.0f}x{m['mean_h']:.0f} px, batch 256")
    table = "\n".join(rows)
    print(f"\n{header}\n\n{table}")
    out = Path(a.out or Path(a.work) / "results.json")
    out.write_text(json.dumps({"header": header, "table": table, "shards": m, "results": res}, indent=1))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
