#!/usr/bin/env bash
# Weak scaling on the GPUs of one host (per-GPU batch fixed): vitrain over NCCL against PyTorch
# DDP under torchrun, 1 -> 2 -> ... GPUs, plus the overlap check (one bucket = all-reduce after
# backward, vs 25 MB buckets overlapped with it). vitrain runs with and without the CUDA graph
# (GRAPH=off|on|auto, default auto = both). Then vitrain alone on each of the largest count's
# GPUs, all at once (the GPUs of one host differ by a few percent; the one-GPU row is GPU 0).
# Ends with the weak-scaling table (efficiencies against GPU 0 and against each GPU alone,
# vitrain / DDP) from the JSON files.
#   bench/step/scaling.sh "1 2 4" c32_w512,vit_b16 [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
gpus_list=${1:-"1 2 4"}
shapes=${2:-c32_w512,vit_b16}
out=${3:-runs/bench}
mkdir -p "$out"
rm -f "$out"/scaling_*.json "$out"/solo_gpu*.json  # a failed run must not leave an old result in the table
export NCCL_NVLS_ENABLE=0
for g in $gpus_list; do
  python3 bench/step/run.py --gpus "$g" --shapes "$shapes" --modes eager --graph "${GRAPH:-auto}" --json "$out/scaling_$g.json"
done
g=$(printf '%s\n' $gpus_list | sort -n | tail -1)  # the largest count
# Rank i of an N-GPU run uses the i-th visible GPU: so does solo run i (CUDA_VISIBLE_DEVICES honoured).
IFS=, read -ra visible <<< "${CUDA_VISIBLE_DEVICES:-}"
echo "== vitrain alone on each of the $g GPUs, all at once"
for ((i = 0; i < g; i++)); do
  CUDA_VISIBLE_DEVICES=${visible[i]:-$i} python3 bench/step/run.py --gpus 1 --shapes "$shapes" --modes none --graph "${GRAPH:-auto}" \
    --json "$out/solo_gpu$i.json" > "$out/solo_gpu$i.md" 2>&1 &
done
wait
echo "== weak scaling (bench/step/scaling_table.py)"
python3 bench/step/scaling_table.py $(for g2 in $gpus_list; do echo "$out/scaling_$g2.json"; done) \
  --solo $(for ((i = 0; i < g; i++)); do echo "$out/solo_gpu$i.json"; done)
echo "== overlap, $g GPUs, vit_b16: one bucket (communication after backward)"
python3 bench/step/run.py --gpus "$g" --shapes vit_b16 --modes none --graph off --set distributed.bucket_mb=4096 \
  --json "$out/no_overlap_$g.json"
