"""The quickstart's two stages as a user runs them: pretraining (MLP head, 16 px) on synthetic
data, then the fine-tune job from its checkpoint at 24 px (linear head, resampled position
embeddings). Checks accuracy, the transfer log, and every output file of a run."""
import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vitrun import TINY, metrics, run, sets


def test_quickstart_pipeline(tmp_path):
    pre_dir, ft_dir = tmp_path / "pretrain", tmp_path / "finetune"
    pre = run(["--config", "configs/quickstart.yaml"] + sets([f"run.dir={pre_dir}", "logging.progress=lines"]))
    pre_summary = json.loads((pre_dir / "summary.json").read_text())
    assert pre_summary["eval_accuracy"] >= 0.90, pre.stdout

    ft = run(["--config", "configs/quickstart_finetune.yaml"] + sets(
        [f"run.dir={ft_dir}", f"model.init_from={pre_dir}/checkpoints/latest", "logging.progress=lines"]))
    log = ft.stdout + ft.stderr
    assert "resampled pos_embed: grid 4x4 -> 6x6 (bicubic)" in log, log
    assert "dropped (pretraining head): pre_logits.fc.weight, pre_logits.fc.bias, head.weight, head.bias" in log, log
    assert "newly initialised (10 classes, head.* zeros): head.weight, head.bias" in log, log
    ft_summary = json.loads((ft_dir / "summary.json").read_text())
    assert ft_summary["eval_accuracy"] >= pre_summary["eval_accuracy"] - 0.01, (pre_summary, ft_summary)

    # Outputs of a run.
    for name in ["config.yaml", "metrics.jsonl", "summary.json"]:
        assert (pre_dir / name).exists(), name
    train = metrics(pre_dir, "train")
    assert {"split", "step", "epoch", "loss", "lr", "grad_norm", "img_per_s"} <= set(train[0])
    assert train[-1]["loss"] < train[0]["loss"]
    evals = metrics(pre_dir, "eval")
    assert evals and {"split", "step", "loss", "accuracy"} <= set(evals[-1])
    assert evals[-1]["samples"] == 1024
    latest = pre_dir / "checkpoints" / "latest"
    assert latest.is_symlink() and (latest / "COMMITTED").exists()
    for name in ["model.safetensors", "optimizer.safetensors", "rank_0.json", "config.yaml", "MANIFEST.json"]:
        assert (latest / name).exists(), name

    # TensorBoard reads the event files.
    acc = EventAccumulator(str(pre_dir / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "train/loss" in tags and "eval/accuracy" in tags
    loss_events = acc.Scalars("train/loss")
    assert [e.step for e in loss_events] == [l["step"] for l in train]
    assert abs(loss_events[-1].value - train[-1]["loss"]) < 1e-5


def test_timm_safetensors_initialises_a_finetune_run(tmp_path):
    """Public weights as timm writes them start the fine-tune stage (grid 4x4 -> 6x6)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=1000)
    weights = tmp_path / "timm_vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))

    run_dir = tmp_path / "ft_from_timm"
    proc = run(["--config", "configs/quickstart_finetune.yaml"] + sets(
        [f"run.dir={run_dir}", f"model.init_from={weights}", "train.steps=8", "logging.progress=lines",
         "logging.every_steps=4"]))
    log = proc.stdout + proc.stderr
    # Every backbone tensor but pos_embed: cls_token, patch_embed (2), 3 blocks x 12, norm (2).
    assert f"init_from {weights}: loaded 41 tensors unchanged" in log, log
    assert "resampled pos_embed: grid 4x4 -> 6x6 (bicubic)" in log, log
    dropped = [l for l in log.splitlines() if "dropped (pretraining head):" in l]
    assert len(dropped) == 1 and sorted(dropped[0].split(": ")[-1].split(", ")) == ["head.bias", "head.weight"], log
    assert "newly initialised (10 classes, head.* zeros): head.weight, head.bias" in log, log
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 8

    # Weights of another width are refused with the key and both shapes.
    wide = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=96, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=10)
    bad = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(bad))
    proc = run(["--config", "configs/quickstart_finetune.yaml"] + sets(
        [f"run.dir={tmp_path / 'bad'}", f"model.init_from={bad}"]), check=False)
    assert proc.returncode != 0
    assert "cls_token: source shape [1, 1, 96] vs model [1, 1, 64]" in proc.stderr, proc.stderr


def test_init_from_a_run_dir_and_a_missing_weights_file(tmp_path):
    pre_dir = tmp_path / "pre"
    run(["--config", "configs/quickstart.yaml"] + sets(TINY + [f"run.dir={pre_dir}", "train.steps=2"]))
    # The pretraining run.dir itself names its newest checkpoint.
    proc = run(["--config", "configs/quickstart_finetune.yaml"] + sets(
        TINY + [f"run.dir={tmp_path / 'ft'}", f"model.init_from={pre_dir}", "train.steps=1",
                "train.eval_every_steps=1000"]))
    assert f"init_from {pre_dir}/checkpoints/step_00000002" in proc.stdout + proc.stderr
    proc = run(["--config", "configs/quickstart_finetune.yaml"] + sets(
        TINY + [f"run.dir={tmp_path / 'ft2'}", "model.init_from=nowhere/vit.safetensors"]), check=False)
    assert proc.returncode == 2 and "model.init_from: 'nowhere/vit.safetensors' does not exist" in proc.stderr, proc.stderr
