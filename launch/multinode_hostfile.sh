#!/usr/bin/env bash
# Several machines with mpirun and a hostfile (one line per machine: "host slots=GPUS").
#   launch/multinode_hostfile.sh hosts 32 --config configs/imagenet21k/vit_b16_pretrain.yaml
# vit-train, the config and the data paths must be at the same place on every machine (a shared
# file system or identical copies); run.dir must be shared for checkpoints. NCCL finds
# InfiniBand or TCP itself; set NCCL_SOCKET_IFNAME / NCCL_IB_HCA here if it picks wrongly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
hostfile=$1 np=$2
shift 2
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
exec mpirun --hostfile "$hostfile" -np "$np" --bind-to none --map-by ppr:"${GPUS_PER_NODE:-8}":node \
  -x NCCL_NVLS_ENABLE -x NCCL_DEBUG -x NCCL_SOCKET_IFNAME -x NCCL_IB_HCA -x LD_LIBRARY_PATH \
  "$root/${VITRAIN_BUILD_DIR:-build}/vit-train" "$@"
