"""Checkpoints and exact resume, with 1 and 2 ranks on CPU (MPI backend).

An uninterrupted run is the reference. A second run is killed with SIGKILL after a checkpoint
and restarted with the same command: its per-step losses must equal the reference bit for bit.
A bit flipped in the newest checkpoint is refused and the run resumes from the previous one.
SIGTERM (SIGUSR1 through mpirun) writes a checkpoint and exits with status 75.
"""
import shutil
import signal
from pathlib import Path

import pytest

from vitrun import TINY, kill_job, losses_by_step, run, sets, start, wait_for

STEPS, EVERY = 120, 20
# Wide enough that a step takes ~15 ms on 2 cores: the test kills the job between checkpoints
# and must not lose the race to a run that has already finished.
SLOWER = ["model.image_size=16", "data.synthetic_image_size=16", "model.width=128", "model.depth=2",
          "model.num_heads=4", "model.mlp_dim=256"]


def args(run_dir, extra=()):
    return ["--config", "configs/quickstart.yaml"] + sets(
        TINY + SLOWER + [f"run.dir={run_dir}", f"train.steps={STEPS}", f"checkpoint.every_steps={EVERY}",
                         "checkpoint.keep=3", "train.eval_every_steps=1000"] + list(extra))


def committed(run_dir, step):
    return (Path(run_dir) / "checkpoints" / f"step_{step:08d}" / "COMMITTED").exists()


@pytest.mark.parametrize("np", [1, 2])
def test_kill_and_restart_gives_identical_losses(tmp_path, np):
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    run(args(ref_dir), np=np)
    reference = losses_by_step(ref_dir)
    assert sorted(reference) == list(range(1, STEPS + 1))

    job = start(args(dir_), np=np, log=tmp_path / "killed.log")
    # Any early checkpoint will do (older ones are pruned as the run goes on).
    wait_for(lambda: any(committed(dir_, s) for s in range(EVERY, STEPS - EVERY, EVERY)),
             what="a checkpoint before the end")
    kill_job(job)  # SIGKILL to the whole job, mid-run
    assert not committed(dir_, STEPS), "the run finished before the kill: the test lost its race"
    proc = run(args(dir_), np=np)
    assert "resumed from" in proc.stdout + proc.stderr
    assert losses_by_step(dir_) == reference  # every step, bit for bit

    # A flipped bit in the newest checkpoint: refused, resume from the previous one.
    newest = Path(dir_) / "checkpoints" / f"step_{STEPS:08d}" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x10
    newest.write_bytes(bytes(data))
    proc = run(args(dir_), np=np)
    out = proc.stdout + proc.stderr
    assert "refusing checkpoint" in out and "model.safetensors does not match its sha256" in out, out
    assert f"resumed from {dir_}/checkpoints/step_{STEPS - EVERY:08d}" in out, out
    assert losses_by_step(dir_) == reference


@pytest.mark.parametrize("np", [1, 2])
def test_stop_signal_writes_checkpoint_and_exits_75(tmp_path, np):
    dir_ = tmp_path / "stopped"
    job = start(args(dir_, ["train.steps=100000", "checkpoint.every_steps=0"]), np=np, log=tmp_path / "stop.log")
    wait_for(lambda: (dir_ / "metrics.jsonl").exists() and (dir_ / "metrics.jsonl").read_text().count("\n") >= 3,
             what="training to start")
    # mpirun forwards SIGUSR1 to every rank (SLURM's warning signal); a single process gets SIGTERM.
    sig = signal.SIGTERM if np == 1 else signal.SIGUSR1
    import os
    os.kill(job.pid, sig)
    code = job.wait(timeout=120)
    assert code == 75, (tmp_path / "stop.log").read_text()
    checkpoints = [p for p in (dir_ / "checkpoints").iterdir() if p.name.startswith("step_")]
    assert len(checkpoints) == 1 and (checkpoints[0] / "COMMITTED").exists()
