#!/usr/bin/env bash
# Runs vit-train on this machine with N processes (one per GPU, or CPU ranks without GPUs).
#   launch/run_local.sh -n 8 [--max-restarts K] --config configs/cifar10/pretrain.yaml [--set key=value ...]
# --max-restarts K: after a failure (not a config error, not a stop on request), start again,
# resuming from the newest committed checkpoint, at most K times.
# Each rank takes the GPU of its local rank; NCCL's NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
# SIGTERM or Ctrl-C to this script: every rank writes a checkpoint and it exits 75 (mpi_forward.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
usage="usage: launch/run_local.sh [-n NP] [--max-restarts K] --config FILE [--set key=value ...]"
np=1 restarts=0
while :; do
  case "${1:-}" in
    -n) np=${2:?$usage}; shift 2 ;;
    --max-restarts) restarts=${2:?$usage}; shift 2 ;;
    *) break ;;
  esac
done
bin=${VITRAIN_BIN:-$root/${VITRAIN_BUILD_DIR:-build}/vit-train}
[ -x "$bin" ] || { echo "run_local: $bin not found; run launch/setup.sh first" >&2; exit 2; }
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
if [ "$np" = 1 ] && [ "$restarts" = 0 ]; then exec "$bin" "$@"; fi
source "$root/launch/mpi_forward.sh"
if [ "$np" = 1 ]; then
  run_with_restarts "$restarts" TERM "$bin" "$@"
else
  # --bind-to none: LibTorch and the loader threads manage their own cores. Signal this script,
  # not mpirun: mpirun SIGKILLs the ranks 1 s after forwarding a SIGTERM of its own (raising its
  # odls_base_sigkill_timeout would also hold every failing job's end by twice that time).
  run_with_restarts "$restarts" USR1 mpirun -np "$np" --oversubscribe \
    --bind-to none "${mpi_forward[@]}" "$bin" "$@"
fi
