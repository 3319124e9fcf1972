"""The data faults of the fault campaign (tests/faults/campaign.py): bad inputs that must end
in one line naming the file or key and a documented exit code: configs, CIFAR files, image
folders, tar shards, checkpoints given to model.init_from. A mixin of Campaign.
"""
import io
import random
import re
import struct
import tarfile
import zipfile

from harness import CONFIG, TINY, JPEG, BACKTRACE, sets, error_lines, warn_lines, short, message


class DataFaults:
    """Scenarios on inputs; uses Campaign's dir(), mpi(), single(), run() and row()."""

    def one_line_case(self, name, d, cmd, want_rc, expected, must_name=(), limit=60, needs=None, what_needs=None):
        """Runs cmd; expects exit want_rc (a set), exactly one error line holding every string of
        must_name (and matching `needs`, a regex, if given), no backtrace."""
        job = self.run(cmd, d / "job.log", d, limit)
        out = job.output()
        errors = error_lines(out)
        trace = BACKTRACE.search(out)
        if job.hung:
            obs = f"hung (still running after {limit} s, killed)"
        else:
            obs = f"exit {job.rc}"
        obs += f"; {len(errors)} error line(s)"
        if errors:
            obs += ": " + short(message(errors[0]), 170)
        if trace:
            obs += "; backtrace/crash text: " + short(out[trace.start():], 60)
        named = bool(errors) and all(s in errors[0] for s in must_name) and (
            needs is None or re.search(needs, errors[0]) is not None)
        if errors and not named:
            lacks = [f"'{s}'" for s in must_name if s not in errors[0]]
            if needs is not None and re.search(needs, errors[0]) is None:
                lacks.append(what_needs or needs)
            obs += " (lacks " + ", ".join(lacks) + ")"
        ok = (not job.hung) and job.rc in want_rc and len(errors) == 1 and named and not trace
        self.row(name, expected, obs, ok)
        return job

    def image_folder(self, root, corrupt=None):
        """root/train and root/val with 2 classes of 8x8 JPEGs; `corrupt` names a file to spoil."""
        for split, n in (("train", 32), ("val", 8)):
            for c in ("cat", "dog"):
                folder = root / split / c
                folder.mkdir(parents=True)
                for i in range(n):
                    (folder / f"{i:04d}.jpg").write_bytes(JPEG)
        if corrupt:
            bad = root / "train" / "dog" / corrupt
            bad.write_bytes(JPEG[:20] + bytes(range(256)) * 2)  # a JPEG header, then garbage
            return bad
        return None

    def tar_shard(self, path, start, n):
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(start, start + n):
                for ext, data in (("jpg", JPEG), ("cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(f"{i:06d}.{ext}")
                    info.size = len(data)
                    info.mtime = 0
                    tar.addfile(info, io.BytesIO(data))

    def s_bad_inputs(self):
        cfg = ["--config", str(CONFIG)]
        small = lambda run_dir, extra=(): cfg + sets(TINY + [f"run.dir={run_dir}", "train.steps=2",
                                                            "train.eval_every_steps=1000"] + list(extra))

        # a. a typo in a YAML file, in one process and under mpirun (every rank meets it: one line)
        for tag, name, runner, expected in (
                ("bad-typo", "10a. YAML key typo (model.dept in a file), 1 process", self.single,
                 "exit 2, one error line naming the file and 'did you mean model.depth?'"),
                ("bad-typo-mpi", "10a'. the same typo under mpirun -np 2", self.mpi,
                 "exit 2, one error line naming the file and the suggestion")):
            d = self.dir(tag)
            f = d / "typo.yaml"
            f.write_text(f"base: {CONFIG}\nmodel:\n  dept: 3\n")
            self.one_line_case(name, d, runner(["--config", str(f)] + sets([f"run.dir={d / 'run'}"])), {2},
                               expected, must_name=("typo.yaml", "did you mean model.depth"))

        # b. an empty config file
        d = self.dir("bad-empty")
        f = d / "empty.yaml"
        f.write_text("")
        self.one_line_case("10b. empty config file", d, self.single(["--config", str(f)]), {2},
                           "exit 2, one error line naming the file", must_name=("empty.yaml",))

        # c. a missing data path
        d = self.dir("bad-missing-path")
        missing = d / "no-such-folder"
        self.one_line_case("10c. data.path missing (image_folder)", d,
                           self.single(small(d / "run", ["data.dataset=image_folder", f"data.path={missing}"])),
                           {2}, "exit 2, one error line naming the path", must_name=(str(missing),))

        # d./e. a corrupt JPEG in an ImageFolder
        def folder_args(d, root, extra):
            return small(d / "run", ["data.dataset=image_folder", f"data.path={root / 'train'}",
                                     f"data.eval_path={root / 'val'}", "model.num_classes=2", "data.num_classes=2",
                                     "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"] + extra)

        d = self.dir("bad-jpeg-fail")
        bad = self.image_folder(d / "images", corrupt="0007.jpg")
        self.one_line_case("10d. corrupt JPEG, data.on_corrupt=fail", d,
                           self.single(folder_args(d, d / "images", ["data.on_corrupt=fail"])), {1},
                           "exit 1, one error line naming the file", must_name=(bad.name,), needs=r"dog")
        d = self.dir("bad-jpeg-skip")
        bad = self.image_folder(d / "images", corrupt="0007.jpg")
        name = "10e. corrupt JPEG, data.on_corrupt=skip"
        expected = "exit 0, no error line, a warning naming the file"
        job = self.run(self.single(folder_args(d, d / "images", ["data.on_corrupt=skip"])), d / "job.log", d, 60)
        out = job.output()
        warns = [l for l in warn_lines(out) if bad.name in l]
        errors = error_lines(out)
        obs = "hung" if job.hung else f"exit {job.rc}"
        obs += f"; {len(errors)} error line(s)" + (": " + short(message(errors[0]), 100) if errors else "")
        obs += ("; warns: " + short(message(warns[0]), 130)) if warns else (
            "; no warning names the file" + (f" (warns: {short(message(warn_lines(out)[0]), 100)})"
                                             if warn_lines(out) else ""))
        self.row(name, expected, obs, job.rc == 0 and not errors and bool(warns))

        # f. a truncated CIFAR-10 file
        d = self.dir("bad-cifar")
        cifar = d / "cifar-10-batches-bin"
        cifar.mkdir()
        rnd = random.Random(0)
        for fname in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            records = bytearray()
            for r in range(64):
                records += bytes([r % 10]) + bytes(rnd.getrandbits(8) for _ in range(3072))
            (cifar / fname).write_bytes(bytes(records))
        victim = cifar / "data_batch_3.bin"
        victim.write_bytes(victim.read_bytes()[:-1000])
        self.one_line_case("10f. truncated CIFAR-10 file (data_batch_3.bin)", d,
                           self.single(cfg + sets([f"run.dir={d / 'run'}", "data.dataset=cifar10",
                                                   f"data.path={cifar}", "train.steps=2", "model.image_size=32",
                                                   "model.patch_size=8", "model.width=32", "model.depth=1",
                                                   "model.num_heads=2", "model.mlp_dim=64", "train.micro_batch_size=32",
                                                   "data.num_workers=1", "logging.progress=lines"])),
                           {1}, "exit 1, one error line naming the file", must_name=("data_batch_3.bin",))

        # g.-j. a tar shard cut inside a member's data / inside a 512-byte header
        for where in ("member data", "a 512-byte header"):
            for mode in ("fail", "skip"):
                tag = "data" if where == "member data" else "header"
                d = self.dir(f"bad-tar-{tag}-{mode}")
                shards = d / "shards"
                shards.mkdir()
                for s in range(2):
                    self.tar_shard(shards / f"train-{s:05d}.tar", s * 16, 16)
                self.tar_shard(shards / "eval.tar", 100, 8)
                victim = shards / "train-00000.tar"
                with tarfile.open(victim) as tar:
                    members = tar.getmembers()
                # Samples 0-5 stay whole, 6-15 (10 samples) are lost: the cut falls in 000006.jpg's
                # data, or 100 bytes into its header.
                m = next(x for x in members if x.name == "000006.jpg")
                cut = m.offset_data + 300 if tag == "data" else m.offset + 100
                victim.write_bytes(victim.read_bytes()[:cut])
                args = small(d / "run", ["data.dataset=tar_shards", f"data.path={shards}/train-{{00000..00001}}.tar",
                                         f"data.eval_path={shards}/eval.tar", "model.num_classes=2",
                                         "data.num_classes=2", f"data.on_corrupt={mode}", "data.shuffle_buffer=8",
                                         "train.micro_batch_size=4", "data.mean=[0.5,0.5,0.5]",
                                         "data.std=[0.25,0.25,0.25]"])
                name = f"10{'ghij'[(tag == 'header') * 2 + (mode == 'skip')]}. tar shard cut inside {where}, " \
                       f"on_corrupt={mode}"
                # "With the samples lost": how much of the shard is whole (a count of members or
                # samples) and that the rest is lost.
                lost = r"(\d+ whole (member|sample).*\blost\b|\blost\b.*\d+ whole (member|sample))"
                if mode == "fail":
                    self.one_line_case(name, d, self.single(args), {1},
                                       "exit 1, one error line naming the shard and the samples lost",
                                       must_name=("train-00000.tar",), needs=lost,
                                       what_needs="what is whole and what is lost")
                else:
                    expected = "exit 0, a warning naming the shard and the samples lost, no error line"
                    job = self.run(self.single(args), d / "job.log", d, 60)
                    out = job.output()
                    warns = [l for l in warn_lines(out) if "train-00000.tar" in l]
                    counted = [l for l in warns if re.search(lost, l)]
                    errors = error_lines(out)
                    obs = "hung" if job.hung else f"exit {job.rc}"
                    obs += f"; {len(errors)} error line(s)" + (": " + short(message(errors[0]), 120) if errors else "")
                    obs += ("; warns: " + short(message(warns[0]), 170)) if warns else "; no warning names the shard"
                    self.row(name, expected, obs, job.rc == 0 and not errors and bool(counted))

        # k./l. model.init_from: a malformed .npz, a safetensors file with a bad header
        d = self.dir("bad-npz")
        npz = d / "ViT-Ti_16.npz"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for key, shape in (("embedding/kernel", (4, 4, 3, 32)), ("cls", (1, 1, 32)),
                               ("Transformer/posembed_input/pos_embedding", (1, 5, 32))):
                n = 1
                for s in shape:
                    n *= s
                header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (shape,)
                header += " " * (63 - (10 + len(header)) % 64) + "\n"
                npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * (4 * n)
                z.writestr(key + ".npy", npy)
        npz.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])  # an interrupted download
        self.one_line_case("10k. model.init_from = truncated .npz", d,
                           self.single(small(d / "run", [f"model.init_from={npz}", "model.head=linear"])), {1, 2},
                           "exit 1 or 2, one error line naming the file", must_name=(npz.name,))
        d = self.dir("bad-safetensors")
        st = d / "model.safetensors"
        header = b'{"cls_token": {"dtype": "F32", "shape": [1, 1, 32], "data_offsets": [0, 128]'  # JSON cut short
        st.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 128)
        self.one_line_case("10l. model.init_from = safetensors with a bad header", d,
                           self.single(small(d / "run", [f"model.init_from={st}", "model.head=linear"])), {1, 2},
                           "exit 1 or 2, one error line naming the file", must_name=(st.name,))

        # m./n. runs that cannot finish
        d = self.dir("bad-steps")
        self.one_line_case("10m. train.steps=9223372036854775807", d,
                           self.single(small(d / "run", ["train.steps=9223372036854775807"])), {2},
                           "refused: exit 2, one error line naming train.steps", must_name=("train.steps",), limit=15)
        d = self.dir("bad-epochs")
        self.one_line_case("10n. train.epochs=1000000000000", d,
                           self.single(cfg + sets(TINY + [f"run.dir={d / 'run'}", "train.epochs=1000000000000",
                                                          "train.eval_every_steps=1000"])), {2},
                           "refused: exit 2, one error line naming train.epochs", must_name=("train.epochs",),
                           limit=15)


