#!/usr/bin/env bash
# The body of both SLURM jobs (pretrain.sbatch, finetune.sbatch), sourced by them with the stage's
# name: checks the binary, starts the ranks with srun, forwards SLURM's warning signal to them and
# requeues the job when vit-train stopped with a checkpoint (exit 75).
#   source launch/slurm/job.sh STAGE CONFIG [--set key=value ...]
stage=$1
shift
set -uo pipefail
config=${1:?usage: sbatch $stage.sbatch CONFIG [--set key=value ...]}
shift
root=${VITRAIN_ROOT:-$SLURM_SUBMIT_DIR}
bin=${VITRAIN_BIN:-$root/${VITRAIN_BUILD_DIR:-build}/vit-train}
if [ ! -x "$bin" ]; then
  echo "$stage.sbatch: $bin not found: submit from the repository root, or set VITRAIN_ROOT" >&2; exit 2
fi
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
# srun does not inherit the job's --cpus-per-task (SLURM 22.05 to 23.02): without this, each rank
# would be bound to one CPU, its loader threads with it.
if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK; fi
mpi=${VITRAIN_SRUN_MPI:-pmix}
echo "$stage.sbatch: job $SLURM_JOB_ID, restart ${SLURM_RESTART_COUNT:-0}: srun --mpi=$mpi $bin --config $config $*"
trap '[ -n "${pid:-}" ] && kill -USR1 "$pid"' USR1   # forward the warning to the ranks (srun passes it on)
srun --mpi="$mpi" --kill-on-bad-exit=1 "$bin" --config "$config" "$@" &
pid=$!
wait $pid; code=$?
while kill -0 $pid 2>/dev/null; do wait $pid; code=$?; done  # a trapped signal cut the wait short
if [ "$code" = 75 ]; then
  echo "$stage.sbatch: vit-train stopped with a checkpoint (exit 75): requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID" || echo "$stage.sbatch: requeue refused: submit the same job again to resume" >&2
fi
exit $code
