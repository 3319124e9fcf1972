"""Real SLURM: a one-machine cluster that this file starts as root (munged, slurmctld, slurmd from
Debian's slurm-wlm and munge; no cgroups, no accounting) runs the scripts in launch/slurm/ with
2 CPU ranks through srun --mpi=pmix (Debian's Open MPI has no PMI-2 support):

- pretrain.sbatch, its GPU #SBATCH lines overridden on sbatch's command line;
- submit_pipeline.sh: the fine-tune job waits (--dependency=afterok) and starts from the
  pretraining job's checkpoint; a failed pretraining job cancels it;
- a preemption: SIGUSR1 to the batch script, as --signal=B:USR1 sends it before the time limit;
  every rank writes a checkpoint, the script exits 75 and requeues the job, which resumes and ends
  with the per-step losses of the uninterrupted run, exactly as logged.

The cluster lives in one temporary folder under /tmp (config, state, spool, logs, munge key and
socket) on ports of its own. After the tests, pass or fail, its jobs are cancelled, the daemons
stopped and any process left that carries the cluster's marker variable killed; a reaper process
does the same if the test itself is killed (a ctest timeout). Every test skips, saying why, where
SLURM cannot start: packages missing, not root, daemons that do not come up.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from vitrun import SOURCE_DIR, kill_until_gone, metrics, sets, wait_for  # noqa: E402

VIT_TRAIN = Path(SOURCE_DIR, os.environ.get("VIT_TRAIN", "build/vit-train")).resolve()

BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue", "sinfo", "srun"]
# sbatch options that turn the scripts' 8-GPU shape into 2 CPU ranks on this machine; --time
# bounds any job that goes wrong.
CPU_JOB = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=10"]
TRAIN = ["run.device=cpu", "train.cuda_graph=false", "train.micro_batch_size=32", "data.synthetic_train_size=1024",
         "data.synthetic_eval_size=128", "data.num_workers=1", "logging.every_steps=1", "logging.progress=lines",
         "logging.tensorboard=false", "train.eval_every_steps=1000", "checkpoint.every_steps=0"]
STEPS = 120  # about 5 s of training on 2 cores: the preemption lands mid-run
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}

SLURM_CONF = """\
ClusterName=vitrain-test
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire (5 s at least) is also how long a requeued job waits to start again (default 120 s)
AuthInfo=socket={dir}/munge/socket,cred_expire=5
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
# srun --mpi=pmix keeps its per-step folders here (default /tmp, where a killed job leaves them behind)
TmpFS={dir}/tmp
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmdLogFile={dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1,batch_sched_delay=0
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName={node} NodeAddr=127.0.0.1 CPUs=2 RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def marked_processes(dir_):
    """Every process whose environment holds this cluster's marker (see Cluster.env)."""
    marker = f"VITRAIN_SLURM_TEST={dir_}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone, or a zombie
            pass
    return pids


def kill_marked(dir_):
    left = kill_until_gone(lambda: marked_processes(dir_), timeout=5)
    assert not left, f"processes of the test cluster survive SIGKILL: {left}"


def reap(dir_):
    """The reaper (this file run as a script): when its standard input closes, because the test
    ended or was killed (a timeout, kill -9), it kills what is left of the cluster and removes it."""
    sys.stdin.read()
    kill_marked(dir_)
    shutil.rmtree(dir_, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path, lines=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


class Cluster:
    """The daemons and the environment that points SLURM's commands at them."""

    def __init__(self, dir_):
        self.dir = dir_
        self.node = socket.gethostname().split(".")[0]  # as `hostname -s`: slurmctld checks it
        self.daemons = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        # The marker finds every process of this cluster at teardown: the daemons, slurmstepd and
        # the jobs all inherit it (sbatch exports the submitter's environment).
        env.update(SLURM_CONF=str(dir_ / "slurm.conf"), VITRAIN_SLURM_TEST=str(dir_), OMP_NUM_THREADS="1",
                   VITRAIN_BIN=str(VIT_TRAIN),
                   OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        self.env = env

    def start(self):
        d = self.dir
        for sub in ("munge", "state", "spool", "log", "tmp"):
            (d / sub).mkdir(mode=0o755)  # munged wants its socket's folders open to all
        key = d / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        (d / "slurm.conf").write_text(SLURM_CONF.format(node=self.node, dir=d, ctld_port=free_port(),
                                                        slurmd_port=free_port()))
        self.daemon("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                               f"--socket={d}/munge/socket", f"--pid-file={d}/munge/pid",
                               f"--log-file={d}/munge/log", f"--seed-file={d}/munge/seed"])
        wait_for(lambda: (d / "munge" / "socket").exists(), timeout=15, what="munged's socket")
        self.daemon("slurmctld", ["slurmctld", "-D", "-f", str(d / "slurm.conf")])
        self.daemon("slurmd", ["slurmd", "-D", "-f", str(d / "slurm.conf"), "-N", self.node])
        wait_for(lambda: self.node_state() == "idle", timeout=30, what="the node to come up idle")

    def daemon(self, name, cmd):
        log = open(self.dir / "log" / f"{name}.out", "w")
        self.daemons[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                              env=self.env, cwd=self.dir, start_new_session=True)
        log.close()

    def node_state(self):
        dead = [n for n, p in self.daemons.items() if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{', '.join(dead)} exited")
        proc = self.cmd(["sinfo", "-h", "-n", self.node, "-o", "%t"], check=False)
        return proc.stdout.strip()

    def cmd(self, args, check=True, timeout=30, cwd=None):
        proc = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=timeout,
                              cwd=cwd or self.dir, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        return proc

    def sbatch(self, args, cwd):
        out = self.cmd(["sbatch", "--parsable"] + CPU_JOB + list(map(str, args)), cwd=cwd).stdout
        return out.strip().split(";")[0]

    def job(self, job_id):
        """scontrol show job's fields ({"JobState": "RUNNING", ...}); there is no sacct without slurmdbd."""
        text = self.cmd(["scontrol", "show", "job", "-o", job_id]).stdout
        return dict(re.findall(r"(\S+?)=(\S*)", text))

    def wait_job(self, job_id, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            info = self.job(job_id)
            if info["JobState"] in ENDED:
                return info
            time.sleep(0.25)
        raise AssertionError(f"job {job_id} still {info['JobState']} after {timeout} s:\n{self.logs()}")

    def logs(self):
        """The end of each daemon's output (with -D, its log) and of slurmd.log (slurmstepd's too)."""
        return "\n".join(f"--- {p.name}\n{tail(p)}" for p in sorted((self.dir / "log").iterdir()))

    def first_error(self):
        lines = [l for p in sorted((self.dir / "log").iterdir()) for l in p.read_text(errors="replace").splitlines()]
        return next((l for l in lines if "fatal" in l), next((l for l in lines if "error" in l), "no error logged"))

    def stop(self):
        """Cancels every job, stops the daemons, then kills whatever still carries the marker."""
        if "slurmctld" in self.daemons and self.daemons["slurmctld"].poll() is None:
            try:
                jobs = self.cmd(["squeue", "-h", "-o", "%i"], check=False, timeout=10).stdout.split()
                if jobs:
                    self.cmd(["scancel"] + jobs, check=False, timeout=10)
                    deadline = time.time() + 15
                    while time.time() < deadline and self.cmd(["squeue", "-h", "-o", "%i"], check=False,
                                                               timeout=10).stdout.strip():
                        time.sleep(0.25)
            except subprocess.TimeoutExpired:
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.daemons.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        kill_marked(self.dir)


@pytest.fixture(scope="module")
def cluster():
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's daemons run as root, and this is not root")
    # /tmp, not pytest's deeper folder: munge's and slurmd's socket paths must stay under 108 bytes.
    c = Cluster(Path(tempfile.mkdtemp(prefix="vit-slurm-", dir="/tmp")))
    os.chmod(c.dir, 0o755)
    reaper = subprocess.Popen([sys.executable, __file__, "--reap", str(c.dir)], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        try:
            c.start()
        except (AssertionError, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            why, logs = f"{e}; {c.first_error()}", c.logs()
            c.stop()
            pytest.skip(f"SLURM did not start here ({why}):\n{logs}")
        yield c
    finally:
        try:
            c.stop()
        finally:
            reaper.stdin.close()
            reaper.wait(timeout=60)


def losses(run_dir):
    """{step: loss}; every step recorded once, in order."""
    lines = metrics(run_dir)
    assert [l["step"] for l in lines] == list(range(1, len(lines) + 1)), "a step lost or recorded twice"
    return {l["step"]: l["loss"] for l in lines}


def pretrain_job(cluster, run_dir, out):
    """pretrain.sbatch as the README submits it (from the repository root, a relative config)."""
    return cluster.sbatch([f"--output={out}", "launch/slurm/pretrain.sbatch", "configs/quickstart.yaml"]
                          + sets(TRAIN + [f"train.steps={STEPS}", f"run.dir={run_dir}"]), cwd=SOURCE_DIR)


def submit_pipeline(cluster, folder, pairs):
    """submit_pipeline.sh from a folder of its own (the configs' run.dirs are relative to it), the
    CPU shape as sbatch options before the configs: (pretraining job, fine-tune job)."""
    configs = [str(SOURCE_DIR / "configs" / name) for name in ("quickstart.yaml", "quickstart_finetune.yaml")]
    out = cluster.cmd(["bash", str(SOURCE_DIR / "launch/slurm/submit_pipeline.sh")] + CPU_JOB + configs + sets(pairs),
                      cwd=folder).stdout
    return re.search(r"pretraining job: (\d+)", out).group(1), re.search(r"fine-tune job: +(\d+)", out).group(1)


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """One pretrain.sbatch job run to its end: (job fields, run.dir, job log)."""
    dir_ = tmp_path_factory.mktemp("uninterrupted")
    job_id = pretrain_job(cluster, dir_ / "run", dir_ / "job.out")
    return cluster.wait_job(job_id), dir_ / "run", dir_ / "job.out"


def test_pretrain_sbatch_runs_two_ranks(uninterrupted):
    info, run_dir, out = uninterrupted
    log = out.read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
    assert info["NumTasks"] == "2" and info["Restarts"] == "0", info
    assert "srun --mpi=pmix" in log and "job: 2 rank(s), device cpu" in log and "backend mpi" in log, log
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == STEPS
    assert sorted(losses(run_dir)) == list(range(1, STEPS + 1))


def test_submit_pipeline_finetunes_after_pretraining(cluster, tmp_path):
    pre, ft = submit_pipeline(cluster, tmp_path, TRAIN + ["train.steps=30"])
    waiting = cluster.job(ft)
    assert waiting["Dependency"].startswith(f"afterok:{pre}"), waiting
    assert waiting["JobState"] == "PENDING", waiting
    pre_info = cluster.wait_job(pre)
    ft_info = cluster.wait_job(ft)
    pre_log = (tmp_path / f"slurm-vit-pretrain-{pre}.out").read_text()
    ft_log = (tmp_path / f"slurm-vit-finetune-{ft}.out").read_text()
    assert pre_info["JobState"] == "COMPLETED" and pre_info["ExitCode"] == "0:0", pre_log
    assert ft_info["JobState"] == "COMPLETED" and ft_info["ExitCode"] == "0:0", ft_log
    assert ft_info["StartTime"] >= pre_info["EndTime"], (pre_info, ft_info)  # ISO times sort as text
    assert "init_from runs/quickstart/pretrain/checkpoints/latest: loaded" in ft_log, ft_log
    for stage in ("pretrain", "finetune"):
        summary = json.loads((tmp_path / "runs/quickstart" / stage / "summary.json").read_text())
        assert summary["steps"] == 30, (stage, summary)


def test_failed_pretraining_cancels_the_finetune_job(cluster, tmp_path):
    pre, ft = submit_pipeline(cluster, tmp_path, TRAIN + ["train.stepz=30"])  # a config error: exit 2
    pre_info, ft_info = cluster.wait_job(pre), cluster.wait_job(ft)
    assert pre_info["JobState"] == "FAILED" and pre_info["ExitCode"] == "2:0", pre_info
    assert ft_info["JobState"] == "CANCELLED" and ft_info["Reason"] == "DependencyNeverSatisfied", ft_info
    assert not list(tmp_path.glob("slurm-vit-finetune-*")), "the fine-tune job ran"


def test_preempted_job_checkpoints_requeues_and_matches_the_uninterrupted_run(cluster, uninterrupted, tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "job.out"
    job_id = pretrain_job(cluster, run_dir, out)
    metrics = run_dir / "metrics.jsonl"
    under_way = lambda: metrics.exists() and metrics.read_text().count('"split":"train"') >= 15
    wait_for(lambda: under_way() or cluster.job(job_id)["JobState"] in ENDED, timeout=90, what="training under way")
    assert under_way(), out.read_text()
    # What --signal=B:USR1@90 does before the time limit: SIGUSR1 to the batch script only.
    cluster.cmd(["scancel", "--batch", "--signal=USR1", job_id])
    info = cluster.wait_job(job_id)
    log = out.read_text()  # both starts: the scripts append (--open-mode=append)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
    assert info["Restarts"] == "1", info
    assert "stop signal received" in log, log
    assert "stopped with a checkpoint (exit 75): requeueing" in log, log
    resumed = re.search(r"resumed from \S+/step_\d+ at step (\d+)", log)
    assert resumed and 15 <= int(resumed.group(1)) < STEPS, log  # the stop came mid-run
    assert losses(run_dir) == losses(uninterrupted[1])  # every step once, the same logged values exactly


if __name__ == "__main__" and sys.argv[1:2] == ["--reap"]:
    reap(Path(sys.argv[2]))
