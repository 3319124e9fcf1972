#!/usr/bin/env bash
# Runs vit-train on this machine with N processes (one per GPU, or CPU ranks without GPUs).
#   launch/run_local.sh -n 8 --config configs/cifar10/pretrain.yaml [--set key=value ...]
# Each rank takes the GPU of its local rank; NCCL's NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
# SIGTERM or Ctrl-C: every rank writes a checkpoint and the script exits 75 (see mpi_forward.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
np=1
if [ "${1:-}" = "-n" ]; then np=$2; shift 2; fi
bin=${VITRAIN_BIN:-$root/${VITRAIN_BUILD_DIR:-build}/vit-train}
[ -x "$bin" ] || { echo "run_local: $bin not found; run launch/setup.sh first" >&2; exit 2; }
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
if [ "$np" = 1 ]; then exec "$bin" "$@"; fi
source "$root/launch/mpi_forward.sh"
# --bind-to none: LibTorch and the loader threads manage their own cores.
run_mpirun -np "$np" --oversubscribe --bind-to none "${mpi_forward[@]}" "$bin" "$@"
