#!/usr/bin/env bash
# README command 1: set up (idempotent), build, and run the quickstart pipeline on synthetic data:
# pretrain a tiny ViT at 16 px (MLP head), then fine-tune it at 24 px (linear head, resampled
# position embeddings). Outputs: runs/quickstart/{pretrain,finetune}/.
#   bash launch/quickstart.sh [-n NP] [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
rm -rf runs/quickstart
np_args=()  # -n NP: that many ranks (MPI on CPUs, one per GPU)
if [ "${1:-}" = "-n" ]; then np_args=(-n "${2:?usage: launch/quickstart.sh [-n NP] [--set key=value ...]}"); shift 2; fi
bash launch/pipeline_local.sh "${np_args[@]}" configs/quickstart.yaml configs/quickstart_finetune.yaml "$@"
