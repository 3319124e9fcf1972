#!/usr/bin/env bash
# Several machines with mpirun and a hostfile (one line per machine: "host slots=GPUS"); the ranks
# per machine are GPUS_PER_NODE (default 8), so NP = machines x GPUS_PER_NODE.
#   launch/multinode_hostfile.sh hosts 16 --config configs/imagenet21k/vit_b16_pretrain.yaml   # 2 x 8 GPUs
# vit-train, the config and the data paths must be at the same place on every machine (a shared
# file system or identical copies); run.dir must be shared for checkpoints. NCCL finds
# InfiniBand or TCP itself; set NCCL_SOCKET_IFNAME / NCCL_IB_HCA here if it picks wrongly.
# mpirun starts Open MPI's daemon on the other machines by ssh without a password (another ssh
# command: OMPI_MCA_plm_rsh_agent="ssh -F FILE"). Open MPI's own TCP (start-up, CPU ranks' gradients)
# may take any interface: OMPI_MCA_oob_tcp_if_include / OMPI_MCA_btl_tcp_if_include=SUBNET narrow it
# on every machine. tests/launch/test_two_hosts.py runs this on two hosts made of namespaces.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: launch/multinode_hostfile.sh HOSTFILE NP [--max-restarts K] --config CONFIG [--set key=value ...]"
hostfile=${1:?$usage} np=${2:?$usage} restarts=0
shift 2
if [ "${1:-}" = "--max-restarts" ]; then restarts=${2:?$usage}; shift 2; fi
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
source "$root/launch/mpi_forward.sh"
# SIGTERM or Ctrl-C to this script: every rank writes a checkpoint, exit 75; --max-restarts K: as
# launch/run_local.sh (mpi_forward.sh).
run_with_restarts "$restarts" USR1 mpirun --hostfile "$hostfile" -np "$np" \
  --bind-to none --map-by ppr:"${GPUS_PER_NODE:-8}":node "${mpi_forward[@]}" "$root/${VITRAIN_BUILD_DIR:-build}/vit-train" "$@"
