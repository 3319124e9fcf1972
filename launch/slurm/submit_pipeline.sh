#!/usr/bin/env bash
# Submits both stages: the fine-tune job waits for the pretraining job to succeed.
#   launch/slurm/submit_pipeline.sh configs/imagenet21k/vit_b16_pretrain.yaml \
#       configs/imagenet21k/vit_b16_finetune_cifar10_384.yaml [--set key=value ...]
# Extra --set flags go to both stages (so not run.dir: the stages need their own). Submit from the
# repository root (the jobs run $SLURM_SUBMIT_DIR/build/vit-train), or set VITRAIN_ROOT to the clone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage="usage: launch/slurm/submit_pipeline.sh PRETRAIN.yaml FINETUNE.yaml [--set key=value ...]"
: "${1:?$usage}" "${2:?$usage}"
pre=$(sbatch --parsable "$here/pretrain.sbatch" "$1" "${@:3}")
echo "pretraining job: $pre"
ft=$(sbatch --parsable --dependency=afterok:"$pre" "$here/finetune.sbatch" "$2" "${@:3}")
echo "fine-tune job:   $ft (starts after $pre succeeds)"
