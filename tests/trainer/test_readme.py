"""The README's commands, in order, in a copy of the repository as a clone would have it.

A newcomer runs the quickstart, then the examples of "Running experiments" one after the other.
Each must succeed, or fail with exit status 2 and one line that names the fix; a finished run
keeps its files byte for byte; a refused run writes nothing. The CIFAR-10 download command runs
against a small archive served on the loopback address (the test machines have no internet).
"""
import functools
import hashlib
import http.server
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import torch

from vitrun import SOURCE_DIR, VIT_TRAIN, env, error_lines, files_of

RECORD = 1 + 3 * 32 * 32
CIFAR_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def cifar_archive(path, records=20, skip=()):
    """A CIFAR-10 binary release in miniature: `records` random records per batch file."""
    gen = torch.Generator().manual_seed(0)
    with tarfile.open(path, "w:gz") as tar:
        members = {n: None for n in CIFAR_FILES if n not in skip}
        members["batches.meta.txt"] = b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n"
        for name, data in members.items():
            if data is None:
                rec = torch.randint(0, 256, (records, RECORD), dtype=torch.uint8, generator=gen)
                rec[:, 0] = torch.arange(records) % 10
                data = rec.numpy().tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """An HTTP server on 127.0.0.1 serving a folder; yields (folder, base URL)."""
    root = tmp_path_factory.mktemp("mirror")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def get_cifar10(args, cwd):
    return subprocess.run([sys.executable, str(SOURCE_DIR / "launch/get_cifar10.py")] + args, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_get_cifar10_checks_the_archive_and_unpacks_it_once(mirror, tmp_path):
    root, url = mirror
    sha = cifar_archive(root / "good.tar.gz")
    ok = get_cifar10(["--url", f"{url}/good.tar.gz", "--sha256", sha, "--md5", "", "--dest", "d"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    folder = tmp_path / "d/cifar-10-batches-bin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(CIFAR_FILES + ["batches.meta.txt"])
    assert (folder / "data_batch_3.bin").stat().st_size == 20 * RECORD
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["cifar-10-batches-bin"]  # no leftovers
    again = get_cifar10(["--url", f"{url}/missing.tar.gz", "--dest", "d"], tmp_path)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_get_cifar10_refuses_a_wrong_checksum_and_a_short_archive(mirror, tmp_path):
    root, url = mirror
    cifar_archive(root / "other.tar.gz")
    bad = get_cifar10(["--url", f"{url}/other.tar.gz", "--dest", "d"], tmp_path)  # the real release's checksum
    assert bad.returncode == 1 and "SHA-256" in bad.stderr and "nothing was unpacked" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert list((tmp_path / "d").iterdir()) == []
    sha = cifar_archive(root / "short.tar.gz", skip=("test_batch.bin",))
    short = get_cifar10(["--url", f"{url}/short.tar.gz", "--sha256", sha, "--md5", "", "--dest", "d"], tmp_path)
    assert short.returncode == 1 and "test_batch.bin" in short.stderr
    assert list((tmp_path / "d").iterdir()) == []
    gone = get_cifar10(["--url", f"{url}/nowhere.tar.gz", "--dest", "d"], tmp_path)
    assert gone.returncode == 1 and "cannot download" in gone.stderr


def readme_block(section):
    """The first ```bash block after the heading `section` of the README, one command per line."""
    text = (SOURCE_DIR / "README.md").read_text()
    after = text[text.index(section):]
    block = after[after.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("```")]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.split("#")[0].strip()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The repository's files as a fresh clone has them, with build/vit-train the binary under test."""
    dest = tmp_path_factory.mktemp("clone")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=SOURCE_DIR,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = SOURCE_DIR / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / "build").mkdir()
    (dest / "build/vit-train").symlink_to(Path(VIT_TRAIN).resolve())
    return dest


def run_line(line, cwd, timeout=600):
    return subprocess.run(line, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env())


def test_readme_commands_in_order(clone, mirror):
    # 1. The quickstart: README command 1 is setup (done: this binary) and then this pipeline.
    quickstart = (clone / "launch/quickstart.sh").read_text()
    assert "bash launch/pipeline_local.sh" in quickstart and "rm -rf runs/quickstart" in quickstart
    proc = run_line("bash launch/pipeline_local.sh configs/quickstart.yaml configs/quickstart_finetune.yaml", clone)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((clone / "runs/quickstart/finetune/summary.json").read_text())
    assert summary["eval_accuracy"] >= 0.90  # what the README promises
    finished = files_of(clone / "runs/quickstart")

    # A data path that is not there yet: --dry-run says so, naming the download command.
    early = run_line("build/vit-train --config configs/cifar10/pretrain.yaml --dry-run", clone)
    assert early.returncode == 2 and len(error_lines(early)) == 1, early.stderr
    assert "launch/get_cifar10.py" in early.stderr
    refused = run_line("build/vit-train --config configs/cifar10/pretrain.yaml --set train.cuda_graph=false", clone)
    assert refused.returncode == 2 and not (clone / "runs/cifar10").exists()  # a refused run creates nothing

    # 2. "Running experiments", line by line.
    root, url = mirror
    sha = cifar_archive(root / "release.tar.gz")
    has_gpu = torch.cuda.is_available()
    for line in readme_block("## Running experiments"):
        args = shlex.split(line)
        if args[:2] == ["python3", "launch/get_cifar10.py"]:
            line += f" --url {url}/release.tar.gz --sha256 {sha} --md5 ''"  # the loopback mirror
        if args[0] == "launch/run_local.sh":
            if has_gpu:
                continue  # trains CIFAR-10 for real on GPUs: the benchmark's business, not a test's
            line = line.replace("-n 8", "-n 2")
        proc = run_line(line, clone)
        errors = error_lines(proc)
        assert proc.returncode in (0, 2), f"{line}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        if proc.returncode == 2:  # one line (per rank) that names the fix
            assert errors and len(set(errors)) == 1, f"{line}:\n{proc.stderr}"
            assert re.search(r"; (use|set|pass|fix|run|download)", errors[0]), errors[0]
        else:
            assert not errors, f"{line}:\n{proc.stderr}"
        if args[:3] == ["build/vit-train", "--config", "configs/quickstart.yaml"] and len(args) == 3:
            assert "holds a finished run" in proc.stdout + proc.stderr
            assert files_of(clone / "runs/quickstart") == finished  # byte for byte
        if "--dry-run" in args:
            assert proc.returncode == 0 and "(valid)" in proc.stdout, proc.stderr
        if "run.dir=runs/lr0.001" in line:
            assert proc.returncode == 0 and (clone / "runs/lr0.001/summary.json").exists()

    # 3. A changed setting on the finished run: exit 2, one line naming both ways out, nothing written.
    changed = run_line("build/vit-train --config configs/quickstart.yaml --set optim.lr=0.001", clone)
    assert changed.returncode == 2 and len(error_lines(changed)) == 1, changed.stderr
    assert "--set run.dir=" in changed.stderr and "--set checkpoint.resume=false" in changed.stderr
    assert files_of(clone / "runs/quickstart") == finished
