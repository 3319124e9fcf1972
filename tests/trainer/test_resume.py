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

from vitrun import TINY, kill_job, losses_by_step, metrics, run, sets, start, wait_for

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
    assert "refused: checkpoint" in out and "latest pointed at" in out and "model.safetensors does not match its sha256" in out, out
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


def quick(run_dir, extra=()):
    return ["--config", "configs/quickstart.yaml"] + sets(
        TINY + [f"run.dir={run_dir}", "train.steps=4", "checkpoint.every_steps=2", "checkpoint.keep=1",
                "train.eval_every_steps=1000"] + list(extra))


@pytest.mark.parametrize("np", [1, 2])
def test_resume_refuses_a_changed_config_and_a_fresh_run_moves_old_checkpoints_aside(tmp_path, np):
    dir_ = tmp_path / "run"
    run(quick(dir_, ["checkpoint.keep=2"]), np=np)
    # The saved data position counts micro-batches of 32: another size would repeat samples.
    proc = run(quick(dir_, ["train.micro_batch_size=16", "train.steps=8", "optim.lr=0.01"]), np=np, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "holds a run with other settings" in out and "train.micro_batch_size: 32 -> 16" in out, out
    assert "total steps (train.steps or train.epochs): 4 -> 8" in out and "optim.lr: 0.002 -> 0.01" in out, out
    import yaml  # the refused config is not written over the run's
    assert yaml.safe_load((dir_ / "config.yaml").read_text())["train"]["micro_batch_size"] == 32
    # Where files are, how it computes and what it logs may change, and the run goes on from
    # the checkpoint: drop the last one, resume from step 2 and train steps 3 and 4 again.
    reference = losses_by_step(dir_)
    shutil.rmtree(dir_ / "checkpoints" / "step_00000004")
    proc = run(quick(dir_, ["checkpoint.keep=2", "logging.tensorboard=false", "data.num_workers=2",
                            "model.head_init=trunc_normal", "optim.momentum=0.5", "train.epochs=3"]), np=np)
    out = proc.stdout + proc.stderr
    assert f"resumed from {dir_}/checkpoints/step_00000002" in out, out
    assert losses_by_step(dir_)[4] == reference[4]
    # A fresh run in the same run.dir: the earlier run's outputs move aside, nothing interleaves.
    earlier_lines = len((dir_ / "metrics.jsonl").read_text().splitlines())
    proc = run(quick(dir_, ["checkpoint.resume=false"]), np=np)
    out = proc.stdout + proc.stderr
    assert "moved an earlier run's outputs" in out, out
    previous = dir_ / "previous"
    assert sorted(p.name for p in (previous / "checkpoints").iterdir() if p.name.startswith("step_")) == \
        ["step_00000002", "step_00000004"]
    assert len((previous / "metrics.jsonl").read_text().splitlines()) == earlier_lines
    assert sorted(p.name for p in (dir_ / "checkpoints").iterdir()) == ["latest", "step_00000004"]
    assert sorted(l["step"] for l in metrics(dir_)) == [1, 2, 3, 4]  # this run's lines only


def test_pruning_keeps_the_new_checkpoint_next_to_debris_of_a_later_step(tmp_path):
    # A step_10 folder never marked COMMITTED (a job stopped between the rename and the marker):
    # resume skips it, and pruning must neither keep it in place of the new checkpoints nor
    # leave `latest` pointing at a removed one.
    dir_ = tmp_path / "run"
    (dir_ / "checkpoints" / "step_00000010").mkdir(parents=True)
    run(quick(dir_))
    names = sorted(p.name for p in (dir_ / "checkpoints").iterdir())
    assert names == ["latest", "step_00000004"], names
    assert (dir_ / "checkpoints" / "latest").resolve().name == "step_00000004"


def test_every_checkpoint_failing_verification_stops_the_job(tmp_path):
    dir_ = tmp_path / "run"
    run(quick(dir_, ["checkpoint.keep=2"]))
    for weights in (dir_ / "checkpoints").glob("step_*/model.safetensors"):
        weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    proc = run(quick(dir_, ["checkpoint.keep=2"]), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "holds 2 committed checkpoint(s) and none verifies" in out and "(truncated)" in out, out
    assert "step 1/" not in out  # it did not start over


def test_a_checkpoint_refused_at_resume_is_neither_counted_nor_removed_by_pruning(tmp_path):
    dir_ = tmp_path / "run"
    run(quick(dir_, ["train.steps=6", "checkpoint.keep=3"]))
    step = lambda n: dir_ / "checkpoints" / f"step_{n:08d}"
    weights = step(4) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    shutil.rmtree(step(6))
    # Resumes from step 2 (step 4 refused) and writes 5 and 6 with keep=2: a count that took in
    # the refused step 4 would have removed the good step 2 at step 5, and step 4 at step 6.
    proc = run(quick(dir_, ["train.steps=6", "checkpoint.every_steps=5", "checkpoint.keep=2"]))
    assert f"resumed from {step(2)}" in proc.stdout + proc.stderr
    assert sorted(p.name for p in (dir_ / "checkpoints").iterdir()) == \
        ["latest", "step_00000004", "step_00000005", "step_00000006"]


STRONG = ["data.rand_augment=rand-m9-mstd0.5-inc1", "data.random_erase_prob=0.25", "data.repeated_augment=2",
          "data.mixup_alpha=0.8", "data.cutmix_alpha=1.0", "train.ema_decay=0.9", "train.eval_flip_tta=true",
          "optim.name=muon"]


@pytest.mark.parametrize("np", [1, 2])
def test_resume_is_exact_with_randaugment_erasing_repeats_mixing_the_weight_average_and_muon(tmp_path, np):
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    run(args(ref_dir, STRONG), np=np)
    reference = losses_by_step(ref_dir)
    job = start(args(dir_, STRONG), np=np, log=tmp_path / "killed.log")
    wait_for(lambda: any(committed(dir_, s) for s in range(EVERY, STEPS - EVERY, EVERY)),
             what="a checkpoint before the end")
    kill_job(job)
    assert not committed(dir_, STEPS), "the run finished before the kill: the test lost its race"
    proc = run(args(dir_, STRONG), np=np)
    assert "resumed from" in proc.stdout + proc.stderr
    assert losses_by_step(dir_) == reference
    last = f"checkpoints/step_{STEPS:08d}/ema.safetensors"
    assert (ref_dir / last).read_bytes() == (dir_ / last).read_bytes(), "the moving average differs after resume"
    evals = metrics(dir_, "eval")
    assert all(0 <= e[k] <= 1 for e in evals for k in ("ema_accuracy", "flip_tta_accuracy", "ema_flip_tta_accuracy"))


def test_weight_average_is_the_documented_recurrence_and_fine_tuning_can_start_from_it(tmp_path):
    from safetensors.numpy import load_file
    decay = 0.75
    dir_ = tmp_path / "ema"
    run(args(dir_, [f"train.ema_decay={decay}", "train.steps=4", "checkpoint.every_steps=1", "checkpoint.keep=4"]))
    ckpt = lambda step, name: load_file(str(dir_ / "checkpoints" / f"step_{step:08d}" / name))
    for step in (3, 4):  # ema_t = decay ema_{t-1} + (1 - decay) w_t
        before, weights, after = ckpt(step - 1, "ema.safetensors"), ckpt(step, "model.safetensors"), \
            ckpt(step, "ema.safetensors")
        assert sorted(after) == sorted(weights)
        for name in weights:
            expected = decay * before[name].astype("float64") + (1 - decay) * weights[name].astype("float64")
            assert abs(after[name] - expected).max() <= 1e-6 * max(1.0, abs(expected).max()), name
    summary = (dir_ / "summary.json").read_text()
    assert '"ema_eval_accuracy"' in summary and '"eval_seconds"' in summary

    fine = tmp_path / "fine"
    proc = run(["--config", "configs/quickstart.yaml"] + sets(
        TINY + SLOWER + [f"run.dir={fine}", "train.steps=2", f"model.init_from={dir_}", "model.init_from_ema=true",
                         "model.head=linear"]))
    assert "moving average (ema.safetensors)" in proc.stdout + proc.stderr
    no_ema = tmp_path / "no_ema"
    run(args(no_ema, ["train.steps=2"]))
    proc = run(["--config", "configs/quickstart.yaml"] + sets(
        TINY + SLOWER + [f"run.dir={tmp_path / 'fine2'}", "train.steps=2", f"model.init_from={no_ema}",
                         "model.init_from_ema=true"]), check=False)
    assert proc.returncode == 2 and "holds no ema.safetensors" in proc.stderr, proc.stderr
