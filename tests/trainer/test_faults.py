"""Faults that must lose nothing and leave nobody waiting: torn metrics lines, a disk that fills
during training, SIGTERM to the launcher, ranks started in different modes, absurd run lengths.

metrics.jsonl is the record of a run: after any crash and resume it holds every step once and
every line whole. A failed write (a full disk) stops the run with one line naming the file,
rather than training on while records are dropped; freeing space and re-running the same command
resumes from the last committed checkpoint.
"""
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vitrun import SOURCE_DIR, TINY, VIT_TRAIN, env, error_lines, run, sets, start, wait_for

STEPS, EVERY = 40, 20


def args(run_dir, extra=()):
    return ["--config", "configs/quickstart.yaml"] + sets(
        TINY + [f"run.dir={run_dir}", f"train.steps={STEPS}", f"checkpoint.every_steps={EVERY}",
                "checkpoint.keep=3", "train.eval_every_steps=10"] + list(extra))


def records(run_dir):
    """Every line of metrics.jsonl parsed (a torn or malformed line fails the test)."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    assert text.endswith("\n"), "metrics.jsonl ends in a torn line"
    return [json.loads(line) for line in text.splitlines()]


def steps_once(run_dir):
    lines = records(run_dir)
    train = [l["step"] for l in lines if l["split"] == "train"]
    evals = [l["step"] for l in lines if l["split"] == "eval"]
    assert train == list(range(1, STEPS + 1)), train
    assert evals == sorted(set(evals)), evals  # no evaluation recorded twice


def test_resume_cuts_records_after_the_checkpoint_and_a_torn_line(tmp_path):
    dir_ = tmp_path / "run"
    run(args(dir_))
    whole = records(dir_)
    # As if the process died after step 33 while writing a line: the newest checkpoint is step 20.
    shutil.rmtree(dir_ / "checkpoints" / f"step_{STEPS:08d}")
    os.remove(dir_ / "summary.json")
    (dir_ / "checkpoints" / "latest").unlink()
    kept = [l for l in whole if l["step"] <= 33]
    (dir_ / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in kept) + '{"split":"train","st')
    proc = run(args(dir_))
    out = proc.stdout + proc.stderr
    assert f"resumed from {dir_}/checkpoints/step_{EVERY:08d}" in out, out
    assert "metrics.jsonl: cut" in out and "torn last line" in out, out
    steps_once(dir_)
    assert json.loads((dir_ / "summary.json").read_text())["steps"] == STEPS


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only); skips, saying why, where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}): the full-disk test needs one")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder):
    """Writes a ballast file until the file system is full; returns its path."""
    ballast = folder / "ballast"
    f = open(ballast, "wb", buffering=0)
    try:
        while True:
            f.write(b"\0" * 4096)
    except OSError:
        pass
    finally:
        try:
            f.close()
        except OSError:
            pass
    return ballast


def test_full_disk_stops_the_run_and_resume_loses_nothing(small_disk, tmp_path):
    dir_ = small_disk / "run"
    long_run = args(dir_, ["train.steps=4000", "checkpoint.every_steps=500", "checkpoint.keep=1",
                           "train.eval_every_steps=1000"])
    job = start(long_run, log=tmp_path / "full.log")
    wait_for(lambda: (dir_ / "checkpoints" / "step_00000500" / "COMMITTED").exists(), what="the first checkpoint")
    ballast = fill(small_disk)
    rc = job.wait(timeout=300)
    log = (tmp_path / "full.log").read_text()
    errors = [l for l in log.splitlines() if " error]" in l]  # the job's log file, not a process
    assert rc == 1, log
    assert len(errors) == 1 and "IoError" in errors[0] and "disk" in errors[0], log
    assert not (dir_ / "summary.json").exists()
    committed = sorted(p.name for p in (dir_ / "checkpoints").iterdir() if (p / "COMMITTED").exists())
    assert committed, "the committed checkpoint was lost"
    ballast.unlink()  # space again: the same command resumes
    proc = run(long_run)
    assert "resumed from" in proc.stdout + proc.stderr
    lines = records(dir_)
    train = [l["step"] for l in lines if l["split"] == "train"]
    assert train == list(range(1, 4001)), "metrics.jsonl lost or repeated steps"
    assert json.loads((dir_ / "summary.json").read_text())["steps"] == 4000


def test_sigterm_to_the_launcher_checkpoints_and_exits_75(tmp_path):
    """What a scheduler or a user's Ctrl-C does: the signal reaches launch/run_local.sh, not the ranks."""
    dir_ = tmp_path / "run"
    cmd = ["bash", str(SOURCE_DIR / "launch/run_local.sh"), "-n", "2"] + args(
        dir_, ["train.steps=100000", "checkpoint.every_steps=0", "train.eval_every_steps=100000"])
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                           cwd=SOURCE_DIR, start_new_session=True)
    metrics = dir_ / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 20, what="training under way")
    os.kill(job.pid, signal.SIGTERM)  # the launcher only
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 75, out
    committed = [p for p in (dir_ / "checkpoints").iterdir() if (p / "COMMITTED").exists()]
    assert committed, out
    assert "stop signal received" in out


@pytest.mark.parametrize("mode", ["--print-config", "--dry-run", "--help"])
def test_ranks_in_different_modes_end_at_once(tmp_path, mode):
    """mpirun -np 1 vit-train ... : -np 1 vit-train ... --print-config must not leave the trainer waiting."""
    train = [VIT_TRAIN] + args(tmp_path / "run")
    cmd = ["mpirun", "--oversubscribe", "-np", "1"] + train + [":", "-np", "1"] + train + [mode]
    start_time = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=SOURCE_DIR, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert time.time() - start_time < 60
    assert "started in different modes" in proc.stdout + proc.stderr


@pytest.mark.parametrize("pair", ["train.steps=9223372036854775807", "train.epochs=1000000000000"])
def test_a_run_that_cannot_finish_is_refused(tmp_path, pair):
    by_epochs = ["train.steps=0"] if pair.startswith("train.epochs") else []
    proc = run(args(tmp_path / "run", [pair] + by_epochs), check=False)
    errors = error_lines(proc)
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert pair.split("=")[0] in errors[0] and "cannot finish" in errors[0]
    assert not (tmp_path / "run").exists()


def test_max_restarts_finishes_a_run_whose_rank_was_killed(tmp_path):
    """launch/run_local.sh --max-restarts: kill -9 of a rank mid-run ends in a finished run whose
    losses equal an uninterrupted run's, the restart logged with its reason."""
    slower = ["model.image_size=16", "data.synthetic_image_size=16", "model.width=128", "model.depth=2",
              "model.num_heads=4", "model.mlp_dim=256", "train.steps=120", "checkpoint.every_steps=20",
              "train.eval_every_steps=1000"]
    reference = tmp_path / "ref"
    run(args(reference, slower), np=2)
    dir_ = tmp_path / "restarted"
    cmd = ["bash", str(SOURCE_DIR / "launch/run_local.sh"), "-n", "2", "--max-restarts", "2"] + args(dir_, slower)
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(),
                           cwd=SOURCE_DIR, start_new_session=True)
    wait_for(lambda: (dir_ / "checkpoints" / "step_00000020" / "COMMITTED").exists(), what="a first checkpoint")
    ranks = [int(p) for p in subprocess.run(["pgrep", "-f", f"run.dir={dir_}"], capture_output=True,
                                            text=True).stdout.split()
             if Path(f"/proc/{p}/exe").exists() and os.readlink(f"/proc/{p}/exe").endswith("vit-train")]
    assert len(ranks) == 2, ranks
    os.kill(ranks[1], signal.SIGKILL)
    assert not (dir_ / "checkpoints" / "step_00000120").exists(), "the run finished before the kill"
    out, _ = job.communicate(timeout=600)
    assert job.returncode == 0, out
    assert "restart 1 of 2" in out and "resumed from" in out, out
    train = lambda d: {l["step"]: l["loss"] for l in records(d) if l["split"] == "train"}
    assert train(dir_) == train(reference)  # every step once, bit for bit
