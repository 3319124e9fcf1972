"""launch/multinode_hostfile.sh across two hosts made on this machine: the same losses as one host.

Each host is a set of Linux namespaces held by a `sleep`: network (its own interfaces), UTS (its own
hostname) and mount (its own /dev/shm and /run); a veth pair joins the two on a /30 of 10.0.0.0/8.
Host B runs sshd with a temporary host key that takes a temporary client key. multinode_hostfile.sh
runs on host A with a hostfile of the two addresses, 2 slots each; mpirun starts host B's Open MPI
daemon over ssh (plm_rsh_agent: ssh with a temporary config), as on a cluster, and the ranks of the
two hosts talk over TCP. The rest of the file system is shared, so vit-train, the config and
run.dir are at the same paths on both hosts.

The hostnames must differ: Open MPI names its session directories and shared-memory segments after
the host, and two hosts of one name on a shared /tmp and /dev/shm crash in MPI_Comm_split_type.

The test skips with its reason where the machine cannot do this (not root, no sshd, no namespaces,
no veth). Teardown kills every process in the two hosts' namespaces (sshd, Open MPI's daemons,
ranks), which takes the namespaces, their tmpfs and the veth pair with them; outside them there is
only a temporary folder (keys, configs, Open MPI's session directories), removed too.
"""
import ctypes
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from test_world_size import args, assert_close, losses  # noqa: E402  (same run, same check)
from vitrun import SOURCE_DIR, VIT_TRAIN, env, kill_until_gone  # noqa: E402

STEPS = 30
RANKS_PER_HOST = 2
HOLD_S = 600  # the namespaces' holders end by themselves after this, should everything else fail
SSH_PORT = 2222


def _die_with_parent():
    """preexec_fn: SIGKILL this child when pytest dies (kept across exec)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _sh(argv, timeout=30, check=True, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _netns(pid):
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:  # gone, or a zombie
        return None


def _processes_in(namespaces):
    """{pid: command line} of every process whose network namespace is one of `namespaces`."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _netns(entry) in namespaces:
            try:
                out[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                pass
    return out


def _kill_all_in(namespaces):
    """SIGKILL every process in `namespaces`; the namespaces (and the veth pair between them) go
    with the last one. Returns what survived (nothing, normally)."""
    return kill_until_gone(lambda: _processes_in(namespaces))


class Host:
    """A machine of its own but for the file system: network, UTS (hostname) and mount namespaces,
    held by a `sleep`. Its /dev/shm (Open MPI's shared-memory segments, named after the host) and
    /run (sshd's /run/sshd) are its own tmpfs, gone with it."""

    def __init__(self, name, address, holder):
        self.name, self.address, self.holder = name, address, holder
        self.netns = _netns(holder.pid)

    def enter(self):
        return ["nsenter", "-t", str(self.holder.pid), "-n", "-u", "-m", f"--wd={SOURCE_DIR}"]


def _start_host(name, temp):
    unshare = ["unshare", "--net", "--uts", "--mount"]
    setup = (f"hostname {name} && ip link set lo up && mount -t tmpfs -o mode=1777 vit2h /dev/shm"
             " && mount -t tmpfs -o mode=755 vit2h /run && mkdir -m 755 /run/sshd")
    log = temp / f"holder-{name}.log"
    with open(log, "w") as out:
        holder = subprocess.Popen(unshare + ["sh", "-c", f"{setup} && exec sleep {HOLD_S}"], stdout=out,
                                  stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    deadline = time.time() + 10
    while time.time() < deadline and holder.poll() is None:
        try:
            if Path(f"/proc/{holder.pid}/comm").read_text().strip() == "sleep":
                return holder
        except OSError:
            pass
        time.sleep(0.02)
    holder.kill()
    holder.wait()
    pytest.skip(f"cannot make a host of namespaces here ({' '.join(unshare)}): {log.read_text().strip()}")


def _check_prerequisites():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, veth pairs, sshd)")
    sbin = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [tool for tool in ("unshare", "nsenter", "ip", "ssh", "ssh-keygen", "sshd")
               if not shutil.which(tool, path=sbin)]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (Debian: apt-get install openssh-server openssh-client "
                    "iproute2 util-linux)")
    return shutil.which("sshd", path=sbin)


def _write_ssh_files(temp, host_b):
    """sshd's config (for host B) and the client's: temporary keys, no known_hosts, no prompts."""
    for key in ("host_key", "client_key"):
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "vit2h", "-f", str(temp / key)])
    shutil.copy(temp / "client_key.pub", temp / "authorized_keys")
    (temp / "sshd_config").write_text(f"""\
Port {SSH_PORT}
ListenAddress {host_b.address}
HostKey {temp}/host_key
AuthorizedKeysFile {temp}/authorized_keys
PidFile none
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
UseDNS no
ClientAliveInterval 5
ClientAliveCountMax 3
LogLevel VERBOSE
""")
    (temp / "ssh_config").write_text(f"""\
Host *
  Port {SSH_PORT}
  User root
  IdentityFile {temp}/client_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  BatchMode yes
  ConnectTimeout 10
  ServerAliveInterval 5
  ServerAliveCountMax 3
  LogLevel ERROR
""")
    return f"ssh -F {temp}/ssh_config"  # Open MPI's plm_rsh_agent: the command and its arguments


def _start_sshd(sshd, temp, host_a, host_b, agent):
    log = temp / "sshd.log"
    with open(log, "w") as out:
        daemon = subprocess.Popen(host_b.enter() + [sshd, "-D", "-e", "-f", str(temp / "sshd_config")],
                                  stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    deadline = time.time() + 10
    while "Server listening" not in log.read_text():
        assert daemon.poll() is None and time.time() < deadline, f"sshd did not start:\n{log.read_text()}"
        time.sleep(0.05)
    probe = _sh(host_a.enter() + agent.split() + [host_b.address, "uname -n"], check=False)
    if probe.returncode != 0 and "account is locked" in log.read_text():
        pytest.skip("sshd refuses root here (account locked: its password field starts with '!')")
    assert probe.returncode == 0 and probe.stdout.strip() == host_b.name, (probe.stderr, log.read_text())
    return daemon


@pytest.fixture
def two_hosts(tmp_path_factory):
    """Hosts A and B joined by a veth pair, sshd on B; yields (A, B, ssh command, temporary folder)."""
    sshd = _check_prerequisites()
    tag = secrets.token_hex(3)
    subnet = f"10.{200 + secrets.randbelow(55)}.{secrets.randbelow(256)}"
    temp = tmp_path_factory.mktemp("2h")  # a short path: Open MPI puts Unix sockets under it
    hosts, children = [], []
    try:
        for number, side in enumerate("ab", start=1):
            name = f"vit-{side}-{tag}"
            hosts.append(Host(name, f"{subnet}.{number}", _start_host(name, temp)))
        host_a, host_b = hosts
        link = _sh(["ip", "link", "add", f"v2h{tag}a", "netns", str(host_a.holder.pid), "type", "veth", "peer",
                    "name", f"v2h{tag}b", "netns", str(host_b.holder.pid)], check=False)
        if link.returncode != 0:
            pytest.skip(f"cannot make a veth pair here: {link.stderr.strip()}")
        for host, dev in ((host_a, f"v2h{tag}a"), (host_b, f"v2h{tag}b")):
            _sh(host.enter() + ["ip", "addr", "add", f"{host.address}/30", "dev", dev])
            _sh(host.enter() + ["ip", "link", "set", dev, "up"])
        agent = _write_ssh_files(temp, host_b)
        children.append(_start_sshd(sshd, temp, host_a, host_b, agent))
        yield host_a, host_b, agent, temp
    finally:
        survivors = _kill_all_in({h.netns for h in hosts if h.netns})
        for child in children + [h.holder for h in hosts]:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass  # named below
        shutil.rmtree(temp, ignore_errors=True)
        assert not survivors, f"processes left in the test's namespaces: {survivors}"


def _real_vit_train():
    return (SOURCE_DIR / VIT_TRAIN).resolve()  # VIT_TRAIN: absolute under ctest, else relative to the source


def _rank_recorder(temp):
    """A vit-train that writes where its rank runs (host name, network namespace, Open MPI's local
    rank and size), then becomes the real one: proof that the ranks ran on both hosts."""
    folder = temp / "bin"
    folder.mkdir()
    (folder / "vit-train").write_text(f"""#!/bin/sh
echo "$(uname -n) $(readlink /proc/self/ns/net) $OMPI_COMM_WORLD_LOCAL_RANK $OMPI_COMM_WORLD_LOCAL_SIZE" \\
  > {folder}/rank$OMPI_COMM_WORLD_RANK
exec {_real_vit_train()} "$@"
""")
    (folder / "vit-train").chmod(0o755)
    return folder


def test_two_hosts_give_the_losses_of_one(two_hosts, tmp_path):
    host_a, host_b, agent, temp = two_hosts
    np = 2 * RANKS_PER_HOST
    extra = [f"train.steps={STEPS}", "checkpoint.every_steps=0", "train.cuda_graph=false"]
    hostfile = temp / "hostfile"
    hostfile.write_text("".join(f"{h.address} slots={RANKS_PER_HOST}\n" for h in (host_a, host_b)))
    recorder = _rank_recorder(temp)
    subnet = host_a.address.rsplit(".", 1)[0] + ".0/30"
    job_env = dict(env(), GPUS_PER_NODE=str(RANKS_PER_HOST),
                   VITRAIN_BUILD_DIR=os.path.relpath(recorder, SOURCE_DIR),  # runs $root/$VITRAIN_BUILD_DIR/vit-train
                   OMPI_MCA_plm_rsh_agent=agent, OMPI_MCA_orte_tmpdir_base=str(temp),
                   OMPI_MCA_oob_tcp_if_include=subnet, OMPI_MCA_btl_tcp_if_include=subnet,
                   OMPI_MCA_rmaps_base_display_map="1")
    two = subprocess.run(host_a.enter() + ["bash", "launch/multinode_hostfile.sh", str(hostfile), str(np)]
                         + args(tmp_path / "two_hosts", extra),
                         capture_output=True, text=True, timeout=120, env=job_env, cwd=SOURCE_DIR)
    sshd_log = (temp / "sshd.log").read_text()
    assert two.returncode == 0, f"{two.stdout}\n{two.stderr}\nsshd:\n{sshd_log}"

    # Open MPI's view: two nodes of 2 ranks (B by its address until its daemon reports), B's daemon
    # started over ssh from A.
    nodes = dict(re.findall(r"Data for node: (\S+)\s+Num slots: \d+\s+Max slots: \d+\s+Num procs: (\d+)", two.stdout))
    assert nodes in ({host_a.name: "2", host_b.address: "2"}, {host_a.name: "2", host_b.name: "2"}), two.stdout
    assert f"Accepted publickey for root from {host_a.address}" in sshd_log, sshd_log
    # Where each rank of vit-train really ran.
    where = {r: tuple((recorder / f"rank{r}").read_text().split()) for r in range(np)}
    for r in range(np):
        host = (host_a, host_b)[r // RANKS_PER_HOST]
        assert where[r] == (host.name, host.netns, str(r % RANKS_PER_HOST), str(RANKS_PER_HOST)), where
    # The job over, nothing of it is left on B but sshd's listener (and the namespaces' holder).
    left = {}
    for _ in range(100):
        left = {pid: cmd for pid, cmd in _processes_in({host_b.netns}).items()
                if pid != host_b.holder.pid and "[listener]" not in cmd}
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"still running on host B after the job: {left}"

    one = subprocess.run(["bash", "launch/run_local.sh", "-n", str(np)] + args(tmp_path / "one_host", extra),
                         capture_output=True, text=True, timeout=120, cwd=SOURCE_DIR,
                         env=dict(env(), VITRAIN_BIN=str(_real_vit_train())))
    assert one.returncode == 0, f"{one.stdout}\n{one.stderr}"
    assert sorted(losses(tmp_path / "two_hosts")) == list(range(1, STEPS + 1))
    assert_close(losses(tmp_path / "two_hosts"), losses(tmp_path / "one_host"), range(1, STEPS + 1))
