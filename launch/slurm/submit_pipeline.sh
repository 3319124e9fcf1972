#!/usr/bin/env bash
# Submits both stages: the fine-tune job waits for the pretraining job to succeed, and is
# cancelled if it fails (rather than pending for ever, "DependencyNeverSatisfied").
#   launch/slurm/submit_pipeline.sh [SBATCH OPTION ...] configs/imagenet21k/vit_b16_pretrain.yaml \
#       configs/imagenet21k/vit_b16_finetune_cifar10_384.yaml [--set key=value ...]
# sbatch options before the configs, one word each (--partition=gpu --nodes=1), go to both jobs and
# override their #SBATCH lines. Extra --set flags go to both stages (so not run.dir: the stages
# need their own). The jobs run in the folder it is called from (relative paths in the configs
# are from there) and use this clone's build/vit-train, or VITRAIN_ROOT's / VITRAIN_BIN.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The jobs find job.sh and vit-train through VITRAIN_ROOT (sbatch passes the environment on).
export VITRAIN_ROOT=${VITRAIN_ROOT:-$(cd "$here/../.." && pwd)}
usage="usage: launch/slurm/submit_pipeline.sh [SBATCH OPTION ...] PRETRAIN.yaml FINETUNE.yaml [--set key=value ...]"
options=()
while [ $# -gt 0 ] && [[ $1 == -* ]]; do options+=("$1"); shift; done
: "${1:?$usage}" "${2:?$usage}"
pre=$(sbatch --parsable "${options[@]}" "$here/pretrain.sbatch" "$1" "${@:3}")
echo "pretraining job: $pre"
ft=$(sbatch --parsable "${options[@]}" --dependency=afterok:"$pre" --kill-on-invalid-dep=yes \
  "$here/finetune.sbatch" "$2" "${@:3}")
echo "fine-tune job:   $ft (starts after $pre succeeds)"
