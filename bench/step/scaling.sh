#!/usr/bin/env bash
# Weak scaling on the GPUs of one host (per-GPU batch fixed): vitrain over NCCL against PyTorch
# DDP under torchrun, 1 -> 2 -> ... GPUs, plus the overlap check (one bucket = all-reduce after
# backward, vs 25 MB buckets overlapped with it). vitrain runs with and without the CUDA graph
# (GRAPH=off|on|auto, default auto = both). Ends with the weak-scaling table (efficiencies,
# vitrain / DDP) from the per-count JSON files.
#   bench/step/scaling.sh "1 2 4" c32_w512,vit_b16 [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
gpus_list=${1:-"1 2 4"}
shapes=${2:-c32_w512,vit_b16}
out=${3:-runs/bench}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0
for g in $gpus_list; do
  python3 bench/step/run.py --gpus "$g" --shapes "$shapes" --modes eager --graph "${GRAPH:-auto}" --json "$out/scaling_$g.json"
done
echo "== weak scaling (bench/step/scaling_table.py)"
python3 bench/step/scaling_table.py $(for g in $gpus_list; do echo "$out/scaling_$g.json"; done)
g=$(echo $gpus_list | awk '{print $NF}')
echo "== overlap, $g GPUs, vit_b16: one bucket (communication after backward)"
python3 bench/step/run.py --gpus "$g" --shapes vit_b16 --modes none --graph off --set distributed.bucket_mb=4096 \
  --json "$out/no_overlap_$g.json"
