"""The fault campaign's harness: the jobs it starts (process groups, ranks, time limits), the
helpers that read a run directory (losses, committed checkpoints, debris) and the small fixtures
(the TINY overrides, an 8x8 JPEG). Standard library only; used by campaign.py and data_faults.py.
"""
import base64
import json
import os
import re
import signal
import subprocess
import time
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
