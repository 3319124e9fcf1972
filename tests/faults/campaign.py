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
import base64
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "quickstart.yaml"
RUN_LOCAL = ROOT / "launch" / "run_local.sh"

# The TINY overrides of tests/trainer/vitrun.py: a step takes a few milliseconds on one core.
TINY = [
    "model.image_size=8", "model.patch_size=4", "model.width=32", "model.depth=1", "model.num_heads=2",
    "model.mlp_dim=64", "model.drop_path=0.1", "model.dropout=0.1",
    "data.synthetic_image_size=8", "data.synthetic_train_size=512", "data.synthetic_eval_size=128",
    "train.micro_batch_size=32", "logging.every_steps=1", "logging.progress=lines", "data.num_workers=1",
]
# The training run that kills and signals interrupt (2 ranks: ~3 s of training, 7 ms a step).
STEPS, EVERY = 400, 50

# An 8x8 baseline JPEG (made once with Pillow), so that the campaign needs no imaging library.
JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAMCAgMCAgMDAwMEAwMEBQgFBQQEBQoHBwYIDAoMDAsKCwsNDhIQDQ4RDgsLEBYQERMUFRUVDA8X"
    "GBYUGBIUFRT/2wBDAQMEBAUEBQkFBQkUDQsNFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBT/wAAR"
    "CAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEG"
    "E1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWG"
    "h4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEB"
    "AQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYk"
    "NOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0"
    "tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDwKiiivzI/uM//2Q==")

BACKTRACE = re.compile(r"Exception raised from|frame #\d|terminate called|Traceback|core dumped|Segmentation fault"
                       r"|\*\*\* Process received signal")


def sets(pairs):
    out = []
    for p in pairs:
        out += ["--set", p]
    return out


def error_lines(text):
    return [l for l in text.splitlines() if " error]" in l or " error rank" in l]


def warn_lines(text):
    return [l for l in text.splitlines() if " warn]" in l or " warn rank" in l]


def short(text, n=110):
    """text on one line, at most about n characters: its start and its end (where messages often
    say what to do) around '...'."""
    text = " ".join(text.split())
    if len(text) <= n:
        return text
    head = n * 3 // 5
    return text[:head] + " ... " + text[-(n - head - 5):]


def message(line):
    """A log line without its '[12:00:00 error rank 0] ' prefix."""
    return re.sub(r"^\[[^\]]*\]\s*", "", line)


# ---------------------------------------------------------------------------------------------
# Processes


def proc_table():
    """{pid: (state, ppid, session, starttime)} of every process."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 19:
            table[int(d)] = (fields[0], int(fields[1]), int(fields[3]), fields[19])
    return table


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return None
    for e in env:
        if e.startswith(b"OMPI_COMM_WORLD_RANK=") or e.startswith(b"PMIX_RANK="):
            return int(e.split(b"=", 1)[1])
    return None


class Job:
    """One command in its own session and process group, its output (stdout + stderr) in a log."""
    live = set()

    def __init__(self, ctx, cmd, log, cwd, env=None):
        ctx.wait_for_binary()
        self.ctx, self.log, self.cmd = ctx, Path(log), cmd
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env or ctx.env, cwd=cwd, start_new_session=True)
        self.start = time.monotonic()
        self.hung = False
        self.rc = None
        self.ended = None
        self.seen = {}  # pid -> start time of every process of the job seen so far
        Job.live.add(self)

    def wait(self, limit):
        """Exit status, or None when it ran past `limit` s (then the whole job is killed: 'hung')."""
        return self.wait_after(self.start, limit)

    def wait_after(self, t0, limit):
        """As wait(), the limit counted from t0 (a monotonic time)."""
        try:
            self.rc = self.proc.wait(timeout=max(0.1, t0 + limit - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.hung = True
            self.kill()
            self.rc = None
        self.ended = time.monotonic()
        return self.rc

    def running(self):
        return self.proc.poll() is None

    def pids(self):
        """Live processes of the job: its session, every descendant of the launcher (a launcher may
        put mpirun in a session of its own) and every process seen so before (after reparenting)."""
        table = proc_table()
        root = self.proc.pid
        children = {}
        for pid, (_, ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found = {pid for pid, (_, _, sid, _) in table.items() if sid == root}
        stack = [root] + list(found)
        while stack:
            for c in children.get(stack.pop(), []):
                if c not in found:
                    found.add(c)
                    stack.append(c)
        for pid in found:
            self.seen.setdefault(pid, table[pid][3])
        return sorted(pid for pid, start in self.seen.items()
                      if pid in table and table[pid][3] == start and table[pid][0] not in "ZX")

    def strays(self, grace=3.0):
        """Processes of the job still alive `grace` s after its launcher ended."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not self.pids():
                return []
            time.sleep(0.1)
        return self.pids()

    def ranks(self, n=2, timeout=30):
        """{rank: pid} of the vit-train processes of this job."""
        name = os.path.basename(self.ctx.vit_train)[:15]
        deadline = time.monotonic() + timeout
        found = {}
        while time.monotonic() < deadline:
            found = {}
            for pid in self.pids():
                try:
                    with open(f"/proc/{pid}/comm") as f:
                        comm = f.read().strip()
                except OSError:
                    continue
                if comm != name:
                    continue
                r = rank_of(pid)
                if r is None and n == 1:
                    r = 0
                if r is not None:
                    found[r] = pid
            if len(found) == n:
                return found
            time.sleep(0.05)
        raise RuntimeError(f"found ranks {sorted(found)} of {n} in the job's processes")

    def kill(self):
        """SIGCONT (for stopped ranks), then SIGKILL, to every process of the job."""
        for sig in (signal.SIGCONT, signal.SIGKILL):
            targets = self.pids()
            if self.proc.poll() is None:
                targets.append(self.proc.pid)
            for pid in targets:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def output(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def close(self):
        self.kill()
        Job.live.discard(self)


def wait_for(predicate, timeout, job=None):
    """True once predicate() holds; False after `timeout` s or when `job` ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if job is not None and not job.running():
            return predicate()
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------------------------------------
# Run directories


def read_metrics(run_dir):
    """(records, bad): every parseable line of metrics.jsonl, and the count of lines that are not JSON."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return [], 0
    records, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            bad += 1
    return records, bad


def train_steps(run_dir):
    return [r.get("step") for r in read_metrics(run_dir)[0] if r.get("split") == "train"]


def losses(run_dir):
    """Per-step train loss; a step logged twice: the last line wins (as tests/trainer/vitrun.py)."""
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)[0] if r.get("split") == "train"}


def last_step(run_dir):
    steps = train_steps(run_dir)
    return max(steps) if steps else 0


def committed_steps(run_dir):
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = re.fullmatch(r"step_(\d+)", p.name)
        if m and p.is_dir() and (p / "COMMITTED").exists():
            out.append(int(m.group(1)))
    return sorted(out)


def debris(run_dir):
    """Leftovers of an interrupted checkpoint write: *.partial, uncommitted step folders, latest.tmp."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.name.endswith(".partial") or p.name.endswith(".tmp")
                  or (re.fullmatch(r"step_\d+", p.name) and not (p / "COMMITTED").exists()))


def compare_losses(got, ref):
    """'' when equal, else what differs."""
    if got == ref:
        return ""
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    differ = sorted(s for s in set(ref) & set(got) if got[s] != ref[s])
    parts = []
    if missing:
        parts.append(f"{len(missing)} step(s) missing (first {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} extra step(s)")
    if differ:
        s = differ[0]
        parts.append(f"{len(differ)} loss(es) differ (first step {s}: {got[s]} vs {ref[s]})")
    return "; ".join(parts)


def resumed_step(text):
    m = re.search(r"resumed from \S*step_(\d+)", text)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# The campaign


class Campaign:
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
            return first + f"; the run finished before the signal took effect (race lost)", False
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
        failures, partial, finished, modes = [], 0, 0, []
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
