"""Helpers for the whole-program tests: run vit-train as a user would and read its outputs."""
import hashlib
import json
import os
import re
import subprocess
import signal
import time
from pathlib import Path

VIT_TRAIN = os.environ.get("VIT_TRAIN", "build/vit-train")
SOURCE_DIR = Path(os.environ.get("VIT_SOURCE_DIR", Path(__file__).resolve().parents[2]))

# A model and data set small enough that a step takes milliseconds on one CPU core.
TINY = [
    "model.image_size=8", "model.patch_size=4", "model.width=32", "model.depth=1", "model.num_heads=2",
    "model.mlp_dim=64", "model.drop_path=0.1", "model.dropout=0.1",
    "data.synthetic_image_size=8", "data.synthetic_train_size=512", "data.synthetic_eval_size=128",
    "train.micro_batch_size=32", "logging.every_steps=1", "logging.progress=lines", "data.num_workers=1",
]


def command(args, np=1):
    base = [VIT_TRAIN] + list(args)
    if np == 1:
        return base
    return ["mpirun", "-np", str(np), "--oversubscribe", "--bind-to", "none", "-x", "OMP_NUM_THREADS"] + base


def env():
    e = dict(os.environ)
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def sets(pairs):
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


def run(args, np=1, timeout=600, check=True):
    proc = subprocess.run(command(args, np), capture_output=True, text=True, timeout=timeout, env=env(),
                          cwd=SOURCE_DIR)
    if check and proc.returncode != 0:
        raise AssertionError(f"vit-train failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def start(args, np=1, log=None):
    """Starts vit-train in its own process group (so the test can kill the whole job)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(command(args, np), stdout=out, stderr=subprocess.STDOUT, env=env(), cwd=SOURCE_DIR,
                            start_new_session=True)


def kill_job(proc, sig=signal.SIGKILL):
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)


def wait_for(predicate, timeout=300, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def kill_until_gone(find, timeout=15):
    """SIGKILL every process `find()` lists until it lists none or `timeout` s pass; returns the
    survivors (none, normally). For the launch tests' daemons and ranks."""
    deadline = time.time() + timeout
    while (left := find()) and time.time() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return find()


def metrics(run_dir, split="train"):
    path = Path(run_dir) / "metrics.jsonl"
    lines = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    return [l for l in lines if l["split"] == split]


def losses_by_step(run_dir):
    """Per-step train loss; when a step was logged twice (a resumed run), the last line wins."""
    return {l["step"]: l["loss"] for l in metrics(run_dir)}


def error_lines(proc):
    """The text of each error line vit-train printed ("[12:05:12 error rank 1] text" -> "text")."""
    return re.findall(r"^\[[0-9:]+ error(?: rank \d+)?\] (.*)$", proc.stdout + proc.stderr, re.M)


def files_of(folder):
    """{relative path: sha256} of every file under folder: a run.dir's state, byte for byte."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}
