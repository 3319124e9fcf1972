#!/usr/bin/env python3
"""Fault campaign for vit-train (issue 23, "Nothing lost, nothing silent").

Injects every fault of the campaign into real vit-train jobs on the CPU path (2 MPI ranks,
`mpirun -np 2 --oversubscribe`, a tiny ViT on synthetic data) and prints ONE markdown table,
`| scenario | expected | observed | ok |`. Exit status 0 when every row is ok (or skipped), 1
otherwise. Each scenario runs in a temp dir of its own; every job has a time limit, past which
its whole process group is killed and the row says 'hung'.

    ~/.cache/vitrain/venv/bin/python tests/faults/campaign.py [--vit-train build/vit-train]
        [--only NAME,...] [--keep DIR] [--seed N] [--list]

Standard library only. See tests/faults/README.md.
"""
import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data_faults import DataFaults
from harness import STEPS, EVERY, ROOT, CONFIG, RUN_LOCAL, TINY, sets, error_lines, short, message, Job, wait_for, read_metrics, train_steps, losses, last_step, committed_steps, debris, compare_losses, resumed_step


class Campaign(DataFaults):
    def __init__(self, opts):
        self.vit_train = str(Path(opts.vit_train).resolve())
        self.rng = random.Random(opts.seed)
        self.rows = []
        self.mounts = []
        self.env = dict(os.environ)
        self.env["OMP_NUM_THREADS"] = "1"
        if os.geteuid() == 0:
            self.env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
            self.env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        if opts.keep:
            self.base = Path(opts.keep).resolve()
            self.base.mkdir(parents=True, exist_ok=True)
        else:
            self.base = Path(tempfile.mkdtemp(prefix="vitrain-faults-"))
        self.keep = bool(opts.keep)
        self._reference = None

    # -- helpers --------------------------------------------------------------------------------

    def wait_for_binary(self, timeout=300):
        """The binary may be rebuilt under the campaign: wait while it is missing."""
        deadline = time.monotonic() + timeout
        while not os.access(self.vit_train, os.X_OK):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.vit_train} is missing (waited {timeout} s)")
            time.sleep(1)

    def row(self, scenario, expected, observed, ok):
        okay = {True: "yes", False: "NO"}.get(ok, ok)
        observed = observed.replace(str(self.base) + "/", "")  # paths relative to the work dir
        self.rows.append((scenario, expected, observed, okay))
        print(f"  [{okay}] {scenario}: {observed}", file=sys.stderr, flush=True)

    def dir(self, name):
        d = self.base / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def mpi(self, args, np=2):
        return ["mpirun", "-np", str(np), "--oversubscribe", "--bind-to", "none", "-x", "OMP_NUM_THREADS",
                self.vit_train] + list(args)

    def mpmd(self, args0, args1):
        head = ["mpirun", "--oversubscribe", "--bind-to", "none", "-x", "OMP_NUM_THREADS"]
        return head + ["-np", "1", self.vit_train] + list(args0) + [":", "-np", "1", self.vit_train] + list(args1)

    def single(self, args):
        return [self.vit_train] + list(args)

    def train_args(self, run_dir, extra=()):
        return ["--config", str(CONFIG)] + sets(
            TINY + [f"run.dir={run_dir}", f"train.steps={STEPS}", f"checkpoint.every_steps={EVERY}",
                    "checkpoint.keep=3", "train.eval_every_steps=1000"] + list(extra))

    def run(self, cmd, log, cwd, limit, env=None):
        job = Job(self, cmd, log, cwd, env)
        try:
            job.wait(limit)
        finally:
            job.close()
        return job

    def reference(self):
        """Per-step losses of an uninterrupted 2-rank run of train_args (computed once)."""
        if self._reference is None:
            d = self.dir("reference")
            job = self.run(self.mpi(self.train_args(d / "run")), d / "run.log", d, 180)
            ref = losses(d / "run")
            if job.rc != 0 or sorted(ref) != list(range(1, STEPS + 1)):
                raise RuntimeError(f"the reference run failed (exit {job.rc}, {len(ref)} steps logged): "
                                   f"see {d / 'run.log'}")
            self._reference = ref
        return self._reference

    def rerun_and_compare(self, d, cmd, label="rerun"):
        """Reruns the same command; returns (ok, text)."""
        job = self.run(cmd, d / f"{label}.log", d, 180)
        out = job.output()
        got = losses(d / "run")
        diff = compare_losses(got, self.reference())
        step = resumed_step(out)
        dup = len(train_steps(d / "run")) - len(set(train_steps(d / "run")))
        parts = [f"{label} " + ("hung" if job.hung else f"exit {job.rc}"),
                 f"resumed from step {step}" if step is not None else "did NOT resume (no 'resumed from')",
                 "losses = reference" if not diff else "losses differ: " + diff]
        if dup:
            parts.append(f"{dup} step(s) logged twice")
        ok = job.rc == 0 and step is not None and not diff
        return ok, ", ".join(parts)

    def cleanup(self):
        for job in list(Job.live):
            job.close()
        for m in self.mounts:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        self.mounts = []
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- 1. kill -9 of one rank mid-run ---------------------------------------------------------

    def s_kill(self):
        for rank in (1, 0):
            name = f"1. kill -9 rank {rank} mid-run"
            expected = ("job exits non-zero < 30 s after the kill, no rank left behind; rerun resumes, "
                        "per-step losses = uninterrupted run's")
            self.reference()
            d = self.dir(f"kill-rank{rank}")
            cmd = self.mpi(self.train_args(d / "run"))
            job = Job(self, cmd, d / "killed.log", d)
            try:
                # Between checkpoints: the rerun must redo (and re-log) the steps after the newest one.
                if not wait_for(lambda: last_step(d / "run") >= EVERY + EVERY // 2, 120, job) or \
                        not committed_steps(d / "run"):
                    self.row(name, expected, "training did not reach a checkpoint: " + short(job.output()[-300:]),
                             False)
                    continue
                pid = job.ranks()[rank]
                t0 = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                rc = job.wait_after(t0, 60)
                took = job.ended - t0
                strays = [] if job.hung else job.strays()
                at = last_step(d / "run")
            finally:
                job.close()
            first = ("hung (still running 60 s after the kill)" if job.hung else
                     f"exit {rc} {took:.1f} s after the kill (at step {at}, newest checkpoint "
                     f"{max(committed_steps(d / 'run'), default=0)})")
            if strays:
                first += f", {len(strays)} process(es) left running"
            if re.search(rf"process rank {rank} .*signal 9", job.output()):
                first += f", output names rank {rank} (signal 9)"
            else:
                first += f", output does not name rank {rank}"
            ok1 = (not job.hung) and rc != 0 and took < 30 and not strays
            ok2, text = self.rerun_and_compare(d, cmd)
            self.row(name, expected, f"{first}; {text}", ok1 and ok2)

    # -- 2. SIGSTOP of one rank ---------------------------------------------------------------

    def s_sigstop(self):
        timeout_s = 10
        for rank in (1, 0):
            name = f"2. SIGSTOP rank {rank} (distributed.timeout_s={timeout_s})"
            expected = f"exit non-zero < {timeout_s + 10} s after the stop; an error line names the stopped rank {rank}"
            d = self.dir(f"sigstop-rank{rank}")
            cmd = self.mpi(self.train_args(d / "run", ["train.steps=100000", "checkpoint.every_steps=0",
                                                       f"distributed.timeout_s={timeout_s}"]))
            job = Job(self, cmd, d / "stopped.log", d)
            try:
                if not wait_for(lambda: last_step(d / "run") >= 20, 120, job):
                    self.row(name, expected, "training did not start: " + short(job.output()[-300:]), False)
                    continue
                pid = job.ranks()[rank]
                t0 = time.monotonic()
                os.kill(pid, signal.SIGSTOP)
                rc = job.wait_after(t0, timeout_s + 50)
                took = job.ended - t0
                strays = [] if job.hung else job.strays()
                for p in strays:  # a stopped rank that outlived the launcher
                    try:
                        os.kill(p, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            finally:
                job.close()
            out = job.output()
            errors = error_lines(out)
            # "rank 1", "rank(s) 1", "ranks 0, 1": the message (not the line's prefix) names it.
            naming = [l for l in errors if re.search(rf"\brank(?:s|\(s\))?\s+(?:\d+\s*,\s*)*{rank}\b", message(l))]
            if job.hung:
                obs = f"hung (still running {timeout_s + 50} s after the stop)"
            else:
                obs = f"exit {rc} {took:.1f} s after the stop"
            if strays:
                obs += f", {len(strays)} process(es) left running"
            obs += f"; {len(errors)} error line(s)"
            if errors:
                first = (naming or errors)[0]
                obs += ": " + short(message(first), 150)
                others = [l for l in errors if l != first]
                if others:
                    obs += "; also: " + short(others[0], 120)
            ok = (not job.hung) and rc != 0 and took < timeout_s + 10 and bool(naming) and not strays
            self.row(name, expected, obs, ok)

    # -- 3. SIGUSR1 / SIGTERM to the ranks -----------------------------------------------------

    def stop_and_resume(self, name, expected, d, cmd, send):
        """Starts cmd, calls send(job) once training runs, expects exit 75, the stop's checkpoint and an
        exact resume. Returns the row's (observed, ok)."""
        self.reference()
        job = Job(self, cmd, d / "stopped.log", d)
        try:
            if not wait_for(lambda: last_step(d / "run") >= 60, 120, job):
                return "training did not start: " + short(job.output()[-300:]), False
            t0 = time.monotonic()
            send(job)
            rc = job.wait_after(t0, 60)
            took = job.ended - t0
            strays = [] if job.hung else job.strays()
        finally:
            job.close()
        at = last_step(d / "run")
        committed = committed_steps(d / "run")
        if job.hung:
            first = "hung (still running 60 s after the signal)"
        else:
            first = f"exit {rc} after {took:.1f} s"
        if strays:
            first += f", {len(strays)} process(es) left running"
        if at >= STEPS:
            return first + "; the run finished before the signal took effect (race lost)", False
        # The stop's checkpoint: committed, at the last step trained (periodic ones are every 50).
        has_stop_ckpt = bool(committed) and committed[-1] == at
        first += (f", checkpoint of step {at} committed" if has_stop_ckpt else
                  f", NO checkpoint at the stop (stopped at step {at}; committed: {committed or 'none'})")
        ok1 = rc == 75 and took < 30 and has_stop_ckpt and not strays
        ok2, text = self.rerun_and_compare(d, cmd)
        return f"{first}; {text}", ok1 and ok2

    def s_signals(self):
        cases = [("SIGUSR1 to both ranks", signal.SIGUSR1, (0, 1)),
                 ("SIGTERM to both ranks", signal.SIGTERM, (0, 1)),
                 ("SIGTERM to rank 1 only", signal.SIGTERM, (1,))]
        for i, (what, sig, targets) in enumerate(cases):
            name = f"3. {what}"
            expected = "exit 75 < 30 s, a committed checkpoint of the stop step; rerun resumes, losses = reference"
            d = self.dir(f"signal-{i}")
            cmd = self.mpi(self.train_args(d / "run"))

            def send(job, sig=sig, targets=targets):
                ranks = job.ranks()
                for r in targets:
                    os.kill(ranks[r], sig)

            obs, ok = self.stop_and_resume(name, expected, d, cmd, send)
            self.row(name, expected, obs, ok)

    # -- 4. SIGTERM to the launcher -------------------------------------------------------------

    def s_launcher(self):
        name = "4. SIGTERM to launch/run_local.sh -n 2"
        expected = "exit 75 < 30 s, a committed checkpoint of the stop step; rerun resumes, losses = reference"
        d = self.dir("launcher")
        env = dict(self.env, VITRAIN_BIN=self.vit_train)
        cmd = ["bash", str(RUN_LOCAL), "-n", "2"] + self.train_args(d / "run")

        # The rerun goes through the launcher too: Job picks the env from the campaign, so put
        # VITRAIN_BIN there for this scenario.
        saved = self.env
        self.env = env
        try:
            obs, ok = self.stop_and_resume(name, expected, d, cmd, lambda job: os.kill(job.proc.pid, signal.SIGTERM))
        finally:
            self.env = saved
        self.row(name, expected, obs, ok)

    # -- 5. damaged checkpoints ----------------------------------------------------------------

    def s_damage(self):
        steps, every = 40, 10
        d = self.dir("damage")
        extra = [f"train.steps={steps}", f"checkpoint.every_steps={every}", "checkpoint.keep=3"]
        base = d / "base"
        job = self.run(self.mpi(self.train_args(base / "run", extra)), base.with_suffix(".log"), d, 120)
        ref = losses(base / "run")
        newest = f"step_{steps:08d}"
        previous = f"step_{steps - every:08d}"
        if job.rc != 0 or committed_steps(base / "run")[-2:] != [steps - every, steps]:
            for what in ("truncated", "bit flip", "no COMMITTED"):
                self.row(f"5. checkpoint damage: {what}", "", f"the base run failed (exit {job.rc})", False)
            return

        def truncate(ckpt):
            f = ckpt / "model.safetensors"
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

        def flip(ckpt):
            f = ckpt / "model.safetensors"
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0x10
            f.write_bytes(bytes(data))

        def uncommit(ckpt):
            (ckpt / "COMMITTED").unlink()

        for what, damage in (("model.safetensors truncated", truncate), ("a bit flipped in model.safetensors", flip),
                             ("COMMITTED marker removed", uncommit)):
            name = f"5. newest checkpoint: {what}"
            expected = (f"rerun refuses {newest} by name ('refusing checkpoint' / 'refused: checkpoint'), resumes "
                        f"from {previous}, exit 0, losses = undamaged run's")
            case = d / re.sub(r"\W+", "-", what)
            shutil.copytree(base, case, symlinks=True)
            damage(case / "run" / "checkpoints" / newest)
            job = self.run(self.mpi(self.train_args(case / "run", extra)), case / "rerun.log", case, 120)
            out = job.output()
            # HEAD's wording is "refusing checkpoint '...'", the tree's (tests/trainer/test_resume.py)
            # "refused: checkpoint '...'": either, naming the damaged checkpoint, is a refusal by name.
            refusing = [l for l in out.splitlines() if re.search(r"refusing checkpoint|refused: checkpoint", l)]
            named = [l for l in refusing if newest in l]
            step = resumed_step(out)
            diff = compare_losses(losses(case / "run"), ref)
            obs = "hung" if job.hung else f"exit {job.rc}"
            if named:
                obs += "; " + short(message(named[0]).replace(str(case / "run" / "checkpoints") + "/", ""), 150)
            elif refusing:
                obs += f"; a refusal without {newest}: " + short(message(refusing[0]), 120)
            else:
                about = [l for l in out.splitlines() if newest in l and "resumed from" not in l]
                obs += "; no 'refusing/refused: checkpoint' line" + (
                    f" (says: {short(message(about[0]), 120)})" if about else f", {newest} not named")
            obs += f"; resumed from {'step ' + str(step) if step is not None else 'nothing'}"
            obs += "; losses = undamaged run's" if not diff else "; losses differ: " + diff
            ok = job.rc == 0 and bool(named) and step == steps - every and not diff
            self.row(name, expected, obs, ok)

    # -- 6. SIGKILL during checkpoint writes ------------------------------------------------------

    def s_ckpt_kills(self, tries=10):
        name = f"6. SIGKILL at random moments, checkpoint.every_steps=1 ({tries} tries)"
        expected = "every rerun exits 0 (resumable), each train step once in metrics.jsonl"
        d = self.dir("ckpt-kills")
        extra = ["train.steps=60", "checkpoint.every_steps=1", "checkpoint.keep=2"]
        failures, partial, finished = [], 0, 0
        for i in range(tries):
            t = d / f"try{i}"
            t.mkdir()
            cmd = self.mpi(self.train_args(t / "run", extra))
            mode = "job" if i % 2 == 0 else "rank 0"
            delay = self.rng.uniform(0.0, 0.6)
            job = Job(self, cmd, t / "killed.log", t)
            try:
                if not wait_for(lambda: bool(committed_steps(t / "run")), 120, job):
                    failures.append(f"try {i}: no checkpoint before the end")
                    continue
                time.sleep(delay)
                if job.running():
                    if mode == "job":
                        job.kill()
                    else:
                        os.kill(job.ranks()[0], signal.SIGKILL)
                    job.wait(60)
                else:
                    finished += 1
                    job.wait(10)
            except RuntimeError:  # the job ended while its ranks were looked up
                finished += 1
            finally:
                job.close()
            if debris(t / "run"):
                partial += 1
            rerun = self.run(cmd, t / "rerun.log", t, 120)
            steps = train_steps(t / "run")
            _, bad = read_metrics(t / "run")
            if rerun.rc != 0:
                failures.append(f"try {i} (kill {mode} {delay:.2f} s after the first checkpoint): rerun "
                                + ("hung" if rerun.hung else f"exit {rerun.rc}: "
                                   + short(message((error_lines(rerun.output()) or [''])[0]), 120)))
            elif steps != list(range(1, 61)) or bad:
                failures.append(f"try {i}: metrics.jsonl has {len(steps)} train lines for 60 steps"
                                + (f", {bad} invalid line(s)" if bad else ""))
        obs = (f"{tries - len(failures)}/{tries} ok; {partial} kill(s) left a partial checkpoint behind, "
               f"{finished} run(s) had finished before the kill")
        if failures:
            obs += "; " + "; ".join(failures[:3])
        self.row(name, expected, obs, not failures)

    # -- 7. full disk --------------------------------------------------------------------------

    def s_full_disk(self):
        name = "7. disk fills during training (3 MB tmpfs holds run.dir)"
        expected = ("exit non-zero, ONE error line naming the disk; after freeing space the rerun finishes, "
                    "metrics.jsonl all valid JSON, each train step once")
        d = self.dir("full-disk")
        mount = d / "disk"
        mount.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            self.row(name, expected, "skipped: cannot mount a tmpfs here ("
                     + short(proc.stderr.strip() or "not root", 80) + ")", "skipped")
            return
        self.mounts.append(mount)
        steps, every = 1200, 200
        run_dir = mount / "run"
        cmd = self.mpi(self.train_args(run_dir, [f"train.steps={steps}", f"checkpoint.every_steps={every}",
                                                 "checkpoint.keep=1"]))
        job = Job(self, cmd, d / "full.log", d)
        ballast = mount / "ballast"
        try:
            if not wait_for(lambda: every in committed_steps(run_dir), 120, job):
                self.row(name, expected, "no checkpoint before the end: " + short(job.output()[-300:]), False)
                return
            with open(ballast, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass
            t0 = time.monotonic()
            rc = job.wait_after(t0, 60)
            strays = [] if job.hung else job.strays()
        finally:
            job.close()
        out = job.output()
        errors = error_lines(out)
        disk = [l for l in errors if re.search(r"disk|no space left", l, re.I)]
        obs = "hung (still training 60 s after the disk filled)" if job.hung else f"exit {rc}"
        if strays:
            obs += f", {len(strays)} process(es) left running"
        obs += f"; {len(errors)} error line(s)"
        if errors:
            obs += ": " + short(message(errors[0]), 170)
        ok1 = (not job.hung) and rc not in (0, None) and len(errors) == 1 and bool(disk) and not strays
        if ballast.exists():
            ballast.unlink()
        rerun = self.run(cmd, d / "rerun.log", d, 180)
        records, bad = read_metrics(run_dir)
        text = (run_dir / "metrics.jsonl").read_text(errors="replace") if (run_dir / "metrics.jsonl").exists() else ""
        torn = bool(text) and not text.endswith("\n")
        got = [r.get("step") for r in records if r.get("split") == "train"]
        whole = got == list(range(1, steps + 1))
        obs += "; rerun " + ("hung" if rerun.hung else f"exit {rerun.rc}")
        obs += f", metrics.jsonl: {bad} invalid line(s)" + (", torn last line" if torn else "")
        obs += ", each step once" if whole else (
            f", {len(got)} train lines for {steps} steps ({len(got) - len(set(got))} repeated, "
            f"{len(set(range(1, steps + 1)) - set(got))} missing)")
        ok2 = rerun.rc == 0 and bad == 0 and not torn and whole
        self.row(name, expected, obs, ok1 and ok2)

    # -- 8. / 9. MPMD: ranks that disagree ---------------------------------------------------------

    def s_mpmd_config(self):
        name = "8. ranks with different configs (MPMD, rank 1 --set optim.lr=0.01)"
        expected = "refused: exit non-zero < 10 s, an error line names optim.lr"
        d = self.dir("mpmd-config")
        a = self.train_args(d / "run", ["train.steps=20"])
        job = self.run(self.mpmd(a, a + ["--set", "optim.lr=0.01"]), d / "job.log", d, 60)
        out = job.output()
        errors = error_lines(out)
        naming = [l for l in errors if "optim.lr" in l]
        took = job.ended - job.start
        obs = "hung (60 s)" if job.hung else f"exit {job.rc} after {took:.1f} s"
        obs += f"; {len(errors)} error line(s)"
        if errors:
            obs += ": " + short(message((naming or errors)[0]), 150)
        ok = (not job.hung) and job.rc != 0 and took < 10 and bool(naming)
        self.row(name, expected, obs, ok)

    def s_mpmd_mode(self):
        for flag in ("--print-config", "--dry-run", "--help"):
            name = f"9. MPMD: rank 1 runs vit-train {flag}, rank 0 trains"
            expected = "ends (no hang) with a non-zero exit < 10 s"
            d = self.dir("mpmd-" + flag.strip("-"))
            a = self.train_args(d / "run", ["train.steps=20"])
            job = self.run(self.mpmd(a, a + [flag]), d / "job.log", d, 20)
            took = job.ended - job.start
            errors = error_lines(job.output())
            if job.hung:
                obs = "hung (still running after 20 s, killed)"
            else:
                obs = f"exit {job.rc} after {took:.1f} s"
                if job.rc == 0 and (d / "run" / "summary.json").exists():
                    obs += " (rank 0 trained to the end alone)"
            if errors:
                obs += "; " + short(message(errors[0]), 130)
            ok = (not job.hung) and job.rc != 0 and took < 10
            self.row(name, expected, obs, ok)

    # -- 10. bad inputs --------------------------------------------------------------------------

SCENARIOS = [
    ("kill", "s_kill", "1. kill -9 of rank 1, then rank 0, mid-run; rerun resumes exactly"),
    ("sigstop", "s_sigstop", "2. SIGSTOP of rank 1, then rank 0: the collective timeout ends the job"),
    ("signals", "s_signals", "3. SIGUSR1 / SIGTERM to the ranks: exit 75 with a checkpoint, exact resume"),
    ("launcher", "s_launcher", "4. SIGTERM to launch/run_local.sh"),
    ("damage", "s_damage", "5. truncated / bit-flipped / uncommitted newest checkpoint"),
    ("ckpt-kills", "s_ckpt_kills", "6. SIGKILL at random moments with a checkpoint every step"),
    ("full-disk", "s_full_disk", "7. the disk fills during training (needs mount -t tmpfs)"),
    ("mpmd-config", "s_mpmd_config", "8. ranks started with different configs"),
    ("mpmd-mode", "s_mpmd_mode", "9. one rank in --print-config / --dry-run / --help mode"),
    ("bad-inputs", "s_bad_inputs", "10. bad configs, data and weights: one error line, documented exit code"),
]


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit-train", default=str(ROOT / "build" / "vit-train"), help="the binary under test")
    parser.add_argument("--only", default="", help="comma-separated scenario names (see --list)")
    parser.add_argument("--keep", default="", metavar="DIR",
                        help="run in DIR/<scenario> and keep everything (logs, run dirs); default: a temp dir, removed")
    parser.add_argument("--seed", type=int, default=23, help="seeds the random kill moments of scenario 6")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    opts = parser.parse_args()
    if opts.list:
        for name, _, what in SCENARIOS:
            print(f"{name:12s} {what}")
        return 0
    names = [n for n in opts.only.split(",") if n] or [n for n, _, _ in SCENARIOS]
    unknown = sorted(set(names) - {n for n, _, _ in SCENARIOS})
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; --list shows them")
    if shutil.which("mpirun") is None:
        parser.error("mpirun not found (the campaign runs 2 MPI ranks)")

    campaign = Campaign(opts)
    start = time.monotonic()

    def interrupted(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    print(f"fault campaign: {campaign.vit_train}, work in {campaign.base}", file=sys.stderr, flush=True)
    try:
        for name, method, what in SCENARIOS:
            if name not in names:
                continue
            print(f"-- {name}: {what}", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            before = len(campaign.rows)
            try:
                getattr(campaign, method)()
            except KeyboardInterrupt:
                raise
            except Exception as e:  # a broken scenario is a failed row, not a crashed campaign
                campaign.row(f"{name} (scenario)", "runs to the end", f"campaign error: {type(e).__name__}: "
                             + short(str(e), 200), False)
            finally:
                for job in list(Job.live):
                    job.close()
            print(f"   {name}: {len(campaign.rows) - before} row(s), {time.monotonic() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: killing the jobs", file=sys.stderr)
        campaign.cleanup()
        return 130
    finally:
        campaign.cleanup()

    print("| scenario | expected | observed | ok |")
    print("|---|---|---|---|")
    for r in campaign.rows:
        print("| " + " | ".join(cell(c) for c in r) + " |")
    failed = [r for r in campaign.rows if r[3] == "NO"]
    print(f"\n{len(campaign.rows) - len(failed)} of {len(campaign.rows)} rows ok "
          f"({sum(r[3] == 'skipped' for r in campaign.rows)} skipped), {time.monotonic() - start:.0f} s"
          + ("" if campaign.keep else "; --keep DIR keeps the logs"), file=sys.stderr)
    return 1 if failed or not campaign.rows else 0


if __name__ == "__main__":
    sys.exit(main())

