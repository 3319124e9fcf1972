"""The same training on any number of ranks, and a run resumed on another number of ranks.

Every per-sample random choice (crop, flip, RandAugment, random erasing) is keyed by the sample's
global position, and mixup/cutmix by the micro-batch's: with the same global batch and the same
train.micro_batch_size, 1, 2, 3 and 4 ranks (gradient accumulation making up the difference)
give the same per-step losses up to the order of float sums. Dropout and drop path draw per rank,
so they are off here. A run checkpointed on 2 ranks resumes on 1, 3 or 4 and continues as the
uninterrupted run, for the device-resident path, a streamed ImageFolder of JPEGs and tar shards
(which keep the data order of the ranks the run started on).
"""
import json
import shutil
from pathlib import Path

import pytest

from vitrun import TINY, error_lines, files_of, run, sets

STEPS = 50
AUGMENT = ["model.drop_path=0", "model.dropout=0", "train.global_batch_size=24", "train.micro_batch_size=2",
           "data.rand_augment=rand-m9-mstd0.5-inc1", "data.random_erase_prob=0.25", "data.mixup_alpha=0.8",
           "data.cutmix_alpha=1.0", "logging.tensorboard=false", "train.eval_every_steps=1000"]


def args(run_dir, extra=()):
    return ["--config", "configs/quickstart.yaml"] + sets(TINY + AUGMENT + [f"run.dir={run_dir}"] + list(extra))


def losses(run_dir):
    lines = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    out = {l["step"]: l["loss"] for l in lines if l["split"] == "train"}
    assert len(out) == len([l for l in lines if l["split"] == "train"]), "a step recorded twice"
    return out


def assert_close(losses_a, losses_b, steps):
    for s in steps:
        assert abs(losses_a[s] - losses_b[s]) <= 1e-5 * abs(losses_b[s]), (s, losses_a[s], losses_b[s])


def test_losses_do_not_depend_on_the_number_of_ranks(tmp_path):
    by_np = {}
    for np in (1, 2, 3, 4):
        run(args(tmp_path / f"np{np}", [f"train.steps={STEPS}", "checkpoint.every_steps=0"]), np=np)
        by_np[np] = losses(tmp_path / f"np{np}")
    assert sorted(by_np[1]) == list(range(1, STEPS + 1))
    for np in (2, 3, 4):
        assert_close(by_np[np], by_np[1], range(1, STEPS + 1))


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """An ImageFolder of 8x8 JPEGs: 4 classes, 24 training and 8 test images each."""
    import numpy as np
    from PIL import Image
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for c in range(4):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) // 4 + 60 * c
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / f"c{c}" / f"{i}.jpg", quality=95)
    return root


def folder_keys(root):
    return [f"data.dataset=image_folder", f"data.path={root}/train", f"data.eval_path={root}/test",
            "data.device_resident=false", "model.num_classes=4", "data.num_workers=2"]


def shard_keys(root):
    """The same JPEGs as 4 training and 4 test tar shards (WebDataset: NAME.jpg + NAME.cls)."""
    import tarfile
    shards = root / "shards"
    if not shards.exists():
        shards.mkdir()
        for split in ("train", "test"):
            files = sorted((root / split).glob("c*/*.jpg"))
            for s in range(4):
                with tarfile.open(shards / f"{split}-{s}.tar", "w") as tar:
                    for f in files[s::4]:
                        key = f"{f.parent.name}_{f.stem}"
                        tar.add(f, arcname=f"{key}.jpg")
                        cls = shards / "cls"
                        cls.write_text(f.parent.name[1:])
                        tar.add(cls, arcname=f"{key}.cls")
    return ["data.dataset=tar_shards", f"data.path={shards}/train-{{0..3}}.tar",
            f"data.eval_path={shards}/test-{{0..3}}.tar", "model.num_classes=4", "data.num_workers=2",
            "data.shuffle_buffer=16"]


@pytest.mark.parametrize("source", ["resident", "image_folder", "tar_shards"])
def test_a_run_resumes_on_another_number_of_ranks(tmp_path, source, jpeg_folder):
    # Tar shards: 2 plan ranks of 48 samples, 4 steps an epoch; the resumed runs keep that order.
    extra = ["train.steps=30", "checkpoint.every_steps=10", "checkpoint.keep=5"]
    if source == "image_folder":
        extra += folder_keys(jpeg_folder)
    if source == "tar_shards":
        extra += shard_keys(jpeg_folder)
    reference = tmp_path / "ref"
    run(args(reference, extra), np=2)
    for np in (1, 3, 4):
        dir_ = tmp_path / f"np{np}"
        shutil.copytree(reference, dir_, symlinks=True)
        # As if the 2-rank job had stopped after its step-10 checkpoint.
        for later in ("step_00000020", "step_00000030"):
            shutil.rmtree(dir_ / "checkpoints" / later)
        (dir_ / "checkpoints" / "latest").unlink()
        (dir_ / "summary.json").unlink()
        proc = run(args(dir_, extra), np=np)
        assert f"resumed from {dir_}/checkpoints/step_00000010" in proc.stdout + proc.stderr
        resumed = losses(dir_)
        assert sorted(resumed) == list(range(1, 31))
        assert_close(resumed, losses(reference), range(11, 31))


def test_a_global_batch_that_cannot_be_kept_is_refused_before_anything_is_written(tmp_path):
    dir_ = tmp_path / "run"
    implicit = ["train.global_batch_size=0", "train.micro_batch_size=4", "train.steps=8", "checkpoint.every_steps=4"]
    run(args(dir_, implicit), np=2)  # global batch 8 = 2 ranks x 4
    shutil.rmtree(dir_ / "checkpoints" / "step_00000008")
    (dir_ / "summary.json").unlink()
    before = files_of(dir_)
    three = run(args(dir_, implicit), np=3, check=False)  # 12 a step: 8 cannot be made by 3 x 4
    errors = set(error_lines(three))
    assert three.returncode == 2 and len(errors) == 1, three.stderr
    assert "global batch of 8" in next(iter(errors)) and "divides 2" in next(iter(errors))
    one = run(args(dir_, implicit), np=1, check=False)  # 4 a step: --set train.global_batch_size=8 would do
    assert one.returncode == 2 and "--set train.global_batch_size=8" in one.stderr, one.stderr
    assert files_of(dir_) == before
    run(args(dir_, implicit + ["train.global_batch_size=8"]), np=1)
    assert json.loads((dir_ / "summary.json").read_text())["steps"] == 8
