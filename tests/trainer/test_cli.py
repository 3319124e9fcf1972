"""vit-train's command line as a user meets it: help, dry run, and one clear line per mistake."""
import re
import timm
import torch

from vitrun import SOURCE_DIR, run, sets


def test_help_lists_the_flags():
    proc = run(["--help"])
    for flag in ["--config", "--set", "--print-config", "--dry-run"]:
        assert flag in proc.stdout


def test_typo_names_key_and_suggestion():
    proc = run(["--config", "configs/quickstart.yaml", "--set", "model.dept=4"], check=False)
    assert proc.returncode == 2
    assert "model.dept" in proc.stderr and "did you mean model.depth?" in proc.stderr
    assert "Traceback" not in proc.stderr and "terminate called" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  seed: 1\nmodel:\n  width: [64\n")
    proc = run(["--config", str(bad)], check=False)
    assert proc.returncode == 2
    assert re.search(r"bad\.yaml:\d+:\d+: malformed YAML", proc.stderr), proc.stderr


def test_missing_config_file():
    proc = run(["--config", "configs/nope.yaml"], check=False)
    assert proc.returncode == 2
    assert "configs/nope.yaml" in proc.stderr and "does not exist" in proc.stderr


def test_bad_value_names_key():
    proc = run(["--config", "configs/quickstart.yaml"] + sets(["train.micro_batch_size=-3"]), check=False)
    assert proc.returncode == 2
    assert "train.micro_batch_size" in proc.stderr


def test_dry_run_counts_parameters_like_timm():
    proc = run(["--config", "configs/quickstart.yaml", "--dry-run"])
    count = int(re.search(r"parameters: (\d+)", proc.stdout).group(1))
    # timm's VisionTransformer of the same shape (linear head) plus the paper's pre-logits layer.
    ref = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=64, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=10)
    expected = sum(p.numel() for p in ref.parameters()) + 64 * 64 + 64
    assert count == expected
    assert "forward FLOPs per image" in proc.stdout


def test_print_config_is_complete_yaml():
    import yaml
    proc = run(["--config", "configs/cifar10/finetune.yaml", "--print-config"])
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["model"]["image_size"] == 48 and resolved["model"]["head"] == "linear"
    assert resolved["model"]["width"] == 192  # inherited from the pretraining config
    assert set(resolved) == {"run", "model", "data", "optim", "schedule", "train", "distributed", "checkpoint",
                             "logging"}


def test_malformed_sections_and_a_directory_name_the_file(tmp_path):
    for text, expected in [("model: 5\n", "'model' must be a mapping of keys"),
                           ("model:\n  preset: [a]\n", "model.preset: must be a preset name")]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        proc = run(["--config", str(bad)], check=False)
        assert proc.returncode == 2, proc.stderr
        assert "bad.yaml" in proc.stderr and expected in proc.stderr, proc.stderr
    proc = run(["--config", str(tmp_path)], check=False)
    assert proc.returncode == 2 and "is a directory" in proc.stderr, proc.stderr


def test_profile_window_past_the_end_is_reported_at_the_end(tmp_path):
    # Training ends inside the 5-step window: the profiler stops with the steps it holds (a
    # profiler left running crashed the process at exit).
    from vitrun import TINY
    proc = run(["--config", "configs/quickstart.yaml"] + sets(
        TINY + [f"run.dir={tmp_path}", "train.steps=3", "logging.profile_step=2", "train.eval_every_steps=1000"]))
    assert "profile of steps 2-3" in proc.stdout + proc.stderr
    assert (tmp_path / "profile_rank0.json").exists()


def test_a_key_given_twice_is_named_with_its_line(tmp_path):
    bad = tmp_path / "twice.yaml"
    bad.write_text("base: " + str(SOURCE_DIR / "configs/quickstart.yaml") + "\nmodel:\n  depth: 3\n  depth: 4\n")
    proc = run(["--config", str(bad)], check=False)
    assert proc.returncode == 2
    assert "twice.yaml:4" in proc.stderr and "'model.depth' is given twice" in proc.stderr, proc.stderr
