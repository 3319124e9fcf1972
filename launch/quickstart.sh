#!/usr/bin/env bash
# README command 1: set up (idempotent), build, and run the quickstart pipeline on synthetic data:
# pretrain a tiny ViT at 16 px (MLP head), then fine-tune it at 24 px (linear head, resampled
# position embeddings). Outputs: runs/quickstart/{pretrain,finetune}/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
rm -rf runs/quickstart
bash launch/pipeline_local.sh configs/quickstart.yaml configs/quickstart_finetune.yaml "$@"
